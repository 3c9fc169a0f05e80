package podnet

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DefaultPodIfName is the pod interface HostPeer uses when given no IP;
// every CNI we target names the pod end of its veth eth0.
const DefaultPodIfName = "eth0"

// HostVeth is the host-side end of a pod's veth pair, seen from the
// caller's netns, with the pod-side end it is paired with.
type HostVeth struct {
	Name       string // host-side interface name, e.g. vethab12cd
	Index      int    // host-side ifindex, in the caller's netns
	PodIfName  string // pod-side name, e.g. eth0
	PodIfIndex int    // pod-side ifindex, in the pod's netns
}

// podSide is what HostPeer learns inside the pod's netns.
type podSide struct {
	name      string
	index     int
	peerIndex int // IFLA_LINK: the peer's ifindex in the peer's netns
	peerNsID  int // IFLA_LINK_NETNSID as seen from the pod; -1: same netns
}

// HostPeer finds the host-side veth of the pod whose network namespace is
// at nsPath. Inside the pod netns it picks the interface holding podIP (or
// eth0 when podIP is nil), which must be a veth; then, back in the caller's
// netns, it resolves the peer by ifindex and checks that the link found
// there really is that veth's other end (a veth pointing back at the pod
// interface, from the pod's netns) — an ifindex alone names different
// links in different namespaces.
func HostPeer(nsPath string, podIP net.IP) (HostVeth, error) {
	what := fmt.Sprintf("podnet: host peer of %s in %s", podIPString(podIP), nsPath)

	var pod podSide
	err := Do(nsPath, func() error {
		var err error
		pod, err = readPodSide(podIP)
		return err
	})
	if err != nil {
		return HostVeth{}, fmt.Errorf("%s: %w", what, err)
	}
	if pod.peerNsID < 0 {
		return HostVeth{}, fmt.Errorf("%s: %s (ifindex %d) has its peer in the pod netns itself: %w",
			what, pod.name, pod.index, ErrPeerNotFound)
	}

	host, err := netlink.LinkByIndex(pod.peerIndex)
	if err != nil {
		return HostVeth{}, fmt.Errorf("%s: peer ifindex %d of %s is not in this netns: %v: %w",
			what, pod.peerIndex, pod.name, err, ErrPeerNotFound)
	}
	if err := checkHostSide(host, pod, nsPath); err != nil {
		return HostVeth{}, fmt.Errorf("%s: %w", what, err)
	}
	return HostVeth{
		Name:       host.Attrs().Name,
		Index:      host.Attrs().Index,
		PodIfName:  pod.name,
		PodIfIndex: pod.index,
	}, nil
}

// readPodSide runs inside the pod netns.
func readPodSide(podIP net.IP) (podSide, error) {
	link, err := podLink(podIP)
	if err != nil {
		return podSide{}, err
	}
	a := link.Attrs()
	if !isPair(link) {
		return podSide{}, fmt.Errorf("%s (ifindex %d) is of kind %s: %w", a.Name, a.Index, link.Type(), ErrNotVeth)
	}
	return podSide{name: a.Name, index: a.Index, peerIndex: a.ParentIndex, peerNsID: a.NetNsID}, nil
}

func podLink(podIP net.IP) (netlink.Link, error) {
	if podIP == nil {
		link, err := netlink.LinkByName(DefaultPodIfName)
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", DefaultPodIfName, err, ErrNoInterface)
		}
		return link, nil
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(podIP) {
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("interface holding %s (ifindex %d): %w", podIP, a.LinkIndex, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("no interface holds %s: %w", podIP, ErrNoInterface)
}

// checkHostSide verifies, in the caller's netns, that host is pod's peer.
func checkHostSide(host netlink.Link, pod podSide, nsPath string) error {
	a := host.Attrs()
	if !isPair(host) || a.ParentIndex != pod.index || a.NetNsID < 0 {
		return fmt.Errorf("ifindex %d here is %s (%s), not the peer of %s: %w",
			a.Index, a.Name, host.Type(), pod.name, ErrPeerNotFound)
	}
	// The netns id is only meaningful once the kernel has allocated one for
	// the pod netns, which reading the host link (IFLA_LINK_NETNSID) did.
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	nsid, err := netlink.GetNetNsIdByFd(int(ns))
	if err != nil {
		return fmt.Errorf("netns id of %s: %w", nsPath, err)
	}
	if nsid != a.NetNsID {
		return fmt.Errorf("%s (ifindex %d) is paired with a veth in netns id %d, not %s (id %d): %w",
			a.Name, a.Index, a.NetNsID, nsPath, nsid, ErrPeerNotFound)
	}
	return nil
}

// isPair reports whether the link is one end of a pair whose other end
// is in another netns: a veth, or a netkit device (Linux 6.7+, what
// Cilium's netkit mode gives pods instead of a veth). kubeshaper's hooks
// work the same on both; on netkit the host end's are skipped by the
// device's own programs, which the agent detects from counters and then
// runs the pod's rules on the pod end.
func isPair(l netlink.Link) bool { return l.Type() == "veth" || l.Type() == "netkit" }

func podIPString(ip net.IP) string {
	if ip == nil {
		return DefaultPodIfName
	}
	return ip.String()
}
