package podnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PodVeth is the pod-side end of a host veth: the netns it lives in and
// its interface there.
type PodVeth struct {
	// NetnsPath names the pod's netns: a bind mount under /var/run/netns or
	// /run/netns when there is one, else /proc/<pid>/ns/net of a process
	// in it (valid only while that process lives).
	NetnsPath string
	IfIndex   int    // ifindex inside NetnsPath
	IfName    string // name inside NetnsPath, e.g. eth0
}

// netnsDirs are searched before /proc because their paths are stable.
// /var/run is usually a symlink to /run; duplicates are skipped by inode.
var netnsDirs = []string{"/var/run/netns", "/run/netns"}

// PodEnd resolves the pod end of the host-side veth hostVethName, which
// must be in the caller's netns (any netns: the root one, or a "node"
// netns the CLI was started in with ip netns exec).
//
// The kernel reports the peer's netns only as a netns id local to the
// caller's netns (IFLA_LINK_NETNSID), so PodEnd scans candidate netns paths
// and asks the kernel, from the caller's netns, for each one's id
// (RTM_GETNSID, which never allocates ids) until one matches.
func PodEnd(hostVethName string) (PodVeth, error) {
	what := fmt.Sprintf("podnet: pod end of %s", hostVethName)

	host, err := netlink.LinkByName(hostVethName)
	if err != nil {
		return PodVeth{}, fmt.Errorf("%s: %v: %w", what, err, ErrNoInterface)
	}
	a := host.Attrs()
	if !isPair(host) {
		return PodVeth{}, fmt.Errorf("%s: ifindex %d is of kind %s: %w", what, a.Index, host.Type(), ErrNotVeth)
	}
	if a.NetNsID < 0 {
		return PodVeth{}, fmt.Errorf("%s: its peer (ifindex %d) is in this same netns: %w",
			what, a.ParentIndex, ErrPeerNotFound)
	}

	nsPath, err := netnsPathByID(a.NetNsID)
	if err != nil {
		return PodVeth{}, fmt.Errorf("%s: %w", what, err)
	}

	pod := PodVeth{NetnsPath: nsPath, IfIndex: a.ParentIndex}
	err = Do(nsPath, func() error {
		peer, err := netlink.LinkByIndex(a.ParentIndex)
		if err != nil {
			return fmt.Errorf("ifindex %d: %v: %w", a.ParentIndex, err, ErrPeerNotFound)
		}
		if !isPair(peer) || peer.Attrs().ParentIndex != a.Index {
			return fmt.Errorf("ifindex %d is %s (%s), not paired with ifindex %d: %w",
				a.ParentIndex, peer.Attrs().Name, peer.Type(), a.Index, ErrPeerNotFound)
		}
		pod.IfName = peer.Attrs().Name
		return nil
	})
	if err != nil {
		return PodVeth{}, fmt.Errorf("%s: in %s: %w", what, nsPath, err)
	}
	return pod, nil
}

// netnsPathByID returns a path to the netns whose id, seen from the
// caller's netns, is nsid.
func netnsPathByID(nsid int) (string, error) {
	// One socket for the whole scan, opened in the caller's netns.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return "", fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()

	seen := map[[2]uint64]bool{}
	for _, path := range netnsCandidates() {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			continue // a process exited, a mount went away: not ours
		}
		key := [2]uint64{st.Dev, st.Ino}
		if seen[key] {
			continue
		}
		seen[key] = true
		if id, err := nsidOf(h, path); err == nil && id == nsid {
			return path, nil
		}
	}
	return "", fmt.Errorf("no netns under %v or /proc/*/ns/net has netns id %d: %w", netnsDirs, nsid, ErrPeerNotFound)
}

func nsidOf(h *netlink.Handle, path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fd)
	return h.GetNetNsIdByFd(fd)
}

// netnsCandidates lists bind mounts first, then one path per process.
func netnsCandidates() []string {
	var paths []string
	for _, dir := range netnsDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return paths
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err == nil {
			paths = append(paths, filepath.Join("/proc", p.Name(), "ns", "net"))
		}
	}
	return paths
}

// SameNetns reports whether two paths (a /var/run/netns name, a
// /proc/PID/ns/net link) open the same network namespace.
func SameNetns(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
