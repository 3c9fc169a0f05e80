package podnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNetnsNotFound means no network namespace on this node holds the IP
// (yet: a pod's IP may be in the API before its sandbox is up).
var ErrNetnsNotFound = errors.New("no network namespace holds the pod IP")

// Finder maps pod IPs to the network namespaces holding them. CNI plugins
// bind-mount a pod's netns under /var/run/netns, but nothing in the
// Kubernetes API names it, and some runtimes keep it only through the
// sandbox's process; so the finder scans both, each netns once (deduped by
// inode), and caches the result until a lookup misses.
type Finder struct {
	// MinRescan bounds how often a miss may trigger a rescan.
	MinRescan time.Duration

	mu       sync.Mutex
	byIP     map[string]string
	lastScan time.Time
}

// NewFinder returns a Finder that rescans at most every 200 ms.
func NewFinder() *Finder { return &Finder{MinRescan: 200 * time.Millisecond} }

// NetnsFor returns a path to the netns holding ip, other than the caller's.
func (f *Finder) NetnsFor(ip net.IP) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.byIP[ip.String()]; ok && stillThere(p) {
		return p, nil
	}
	if time.Since(f.lastScan) >= f.MinRescan || f.byIP == nil {
		m, err := scanNetns()
		if err != nil {
			return "", err
		}
		f.byIP, f.lastScan = m, time.Now()
		if p, ok := f.byIP[ip.String()]; ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("podnet: %s: %w", ip, ErrNetnsNotFound)
}

// Forget drops ip from the cache, so the next lookup resolves it afresh.
func (f *Finder) Forget(ip net.IP) {
	f.mu.Lock()
	delete(f.byIP, ip.String())
	f.mu.Unlock()
}

func stillThere(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil
}

// scanNetns enters every netns but the caller's once and records its
// addresses.
func scanNetns() (map[string]string, error) {
	type ino struct{ dev, ino uint64 }
	var self unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return nil, fmt.Errorf("podnet: reading own netns: %w", err)
	}
	seen := map[ino]bool{{self.Dev, self.Ino}: true}
	out := map[string]string{}
	for _, path := range netnsCandidates() {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			continue
		}
		id := ino{st.Dev, st.Ino}
		if seen[id] {
			continue
		}
		seen[id] = true
		_ = Do(path, func() error {
			addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
					continue
				}
				if _, dup := out[a.IP.String()]; !dup {
					out[a.IP.String()] = path
				}
			}
			return nil
		})
	}
	return out, nil
}

// Exists reports whether a netns path still exists (a sandbox's bind mount
// or process may be gone).
func Exists(path string) bool { return stillThere(path) }
