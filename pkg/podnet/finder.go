package podnet

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNetnsNotFound means no network namespace on this node holds the IP
// (yet: a pod's IP may be in the API before its sandbox is up).
var ErrNetnsNotFound = errors.New("no network namespace holds the pod IP")

// ErrAmbiguousIP means more than one network namespace holds the pod IP
// behind a veth whose other end is in the caller's netns: kubeshaper
// cannot tell which is the pod and shapes neither.
var ErrAmbiguousIP = errors.New("several network namespaces hold the pod IP behind a host veth")

// Finder maps pod IPs to the network namespaces holding them. CNI plugins
// bind-mount a pod's netns under /var/run/netns, but nothing in the
// Kubernetes API names it, and some runtimes keep it only through the
// sandbox's process; so the finder scans both, each netns once (deduped by
// inode), and caches the result until a lookup misses.
//
// An IP may be held by more than one netns: a node may run other
// containers on private bridges (the same 172.17.0.2 in each), nested
// clusters, or a stale namespace a CNI failed to delete. Every holder is
// kept, and Resolve picks the one whose interface is a veth paired with
// the caller's netns; two such holders are an error, never a guess.
type Finder struct {
	// MinRescan bounds how often a miss may trigger a rescan.
	MinRescan time.Duration

	mu       sync.Mutex
	byIP     map[string][]string
	lastScan time.Time
}

// NewFinder returns a Finder that rescans at most every 200 ms.
func NewFinder() *Finder { return &Finder{MinRescan: 200 * time.Millisecond} }

// candidates returns the paths of every netns (but the caller's) holding
// ip, rescanning on a miss or when a cached path has gone.
func (f *Finder) candidates(ip net.IP) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ps, ok := f.byIP[ip.String()]; ok && allThere(ps) {
		return ps, nil
	}
	if time.Since(f.lastScan) >= f.MinRescan || f.byIP == nil {
		m, err := scanNetns()
		if err != nil {
			return nil, err
		}
		f.byIP, f.lastScan = m, time.Now()
		if ps, ok := f.byIP[ip.String()]; ok {
			return ps, nil
		}
	}
	return nil, fmt.Errorf("podnet: %s: %w", ip, ErrNetnsNotFound)
}

// NetnsFor returns a path to the only netns (other than the caller's)
// holding ip; when several hold it, use Resolve.
func (f *Finder) NetnsFor(ip net.IP) (string, error) {
	ps, err := f.candidates(ip)
	if err != nil {
		return "", err
	}
	if len(ps) > 1 {
		return "", fmt.Errorf("podnet: %s is held by %d network namespaces (%s): %w",
			ip, len(ps), strings.Join(ps, ", "), ErrAmbiguousIP)
	}
	return ps[0], nil
}

// Resolve finds the pod holding ip: its netns path and its host-side veth
// in the caller's netns (see HostPeer). Of several netns holding ip, only
// those whose interface is a veth paired with the caller's netns count;
// exactly one must.
func (f *Finder) Resolve(ip net.IP) (string, HostVeth, error) {
	ps, err := f.candidates(ip)
	if err != nil {
		return "", HostVeth{}, err
	}
	var (
		found []string // netns (host veth), for the ambiguity error
		path  string
		hv    HostVeth
		first error
	)
	for _, p := range ps {
		h, err := HostPeer(p, ip)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		if len(found) == 0 {
			path, hv = p, h
		}
		found = append(found, fmt.Sprintf("%s (host veth %s)", p, h.Name))
	}
	switch len(found) {
	case 0:
		f.Forget(ip)
		return "", HostVeth{}, first
	case 1:
		return path, hv, nil
	}
	f.Forget(ip)
	return "", HostVeth{}, fmt.Errorf("podnet: %s: %s: %w", ip, strings.Join(found, ", "), ErrAmbiguousIP)
}

// Forget drops ip from the cache, so the next lookup resolves it afresh.
func (f *Finder) Forget(ip net.IP) {
	f.mu.Lock()
	delete(f.byIP, ip.String())
	f.mu.Unlock()
}

func allThere(paths []string) bool {
	for _, p := range paths {
		if !stillThere(p) {
			return false
		}
	}
	return true
}

func stillThere(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil
}

// scanNetns enters every netns but the caller's once and records its
// addresses.
func scanNetns() (map[string][]string, error) {
	type ino struct{ dev, ino uint64 }
	var self unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return nil, fmt.Errorf("podnet: reading own netns: %w", err)
	}
	seen := map[ino]bool{{self.Dev, self.Ino}: true}
	out := map[string][]string{}
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
			held := map[string]bool{} // an IP on two links of one netns
			for _, a := range addrs {
				ip := a.IP.String()
				if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() || held[ip] {
					continue
				}
				held[ip] = true
				out[ip] = append(out[ip], path)
			}
			return nil
		})
	}
	return out, nil
}

// Exists reports whether a netns path still exists (a sandbox's bind mount
// or process may be gone).
func Exists(path string) bool { return stillThere(path) }
