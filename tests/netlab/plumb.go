package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// PodSpec says how NewPod plumbs a pod. Zero fields take the lab's
// defaults: host veth <prefix>h<n>, 10.213.<n>.2/24 on eth0 and .1 on the
// host veth, the kernel's MTU, IPv6 and neighbour discovery as they come.
type PodSpec struct {
	HostVeth   string // the node's end (at most 15 bytes)
	IP, HostIP net.IP // the pod's eth0 and the host veth (IPv4)
	PrefixLen  int    // of both addresses
	MTU        int    // of both ends
	// StaticNeighbours makes the neighbour entries of both ends permanent:
	// no ARP on a measured path, and a rule that drops everything cannot
	// leave a failed entry behind.
	StaticNeighbours bool
	// NoIPv6 disables IPv6 in the pod's netns (no ND/MLD chatter).
	NoIPv6 bool
}

// NewPod creates a pod netns (<prefix>-<name>) with eth0 paired to a host
// veth in the node netns, addressed and routed through the node, with
// netlink (a few ms, where a dozen `ip` commands take ~100 ms under load).
// A pod that fails half-way is removed.
func (l *Lab) NewPod(name string, s PodSpec) (*Pod, error) {
	l.mu.Lock()
	l.subnet++
	n := l.subnet
	l.mu.Unlock()
	p := &Pod{Name: l.Prefix + "-" + name, HostVeth: s.HostVeth, IP: s.IP, HostIP: s.HostIP, spec: s}
	if p.HostVeth == "" {
		p.HostVeth = fmt.Sprintf("%sh%d", l.Prefix, n)
	}
	if p.IP == nil {
		p.IP = net.IPv4(10, 213, byte(n), 2).To4()
		p.HostIP = net.IPv4(10, 213, byte(n), 1).To4()
	}
	if p.spec.PrefixLen == 0 {
		p.spec.PrefixLen = 24
	}
	if len(p.HostVeth) > 15 {
		return nil, fmt.Errorf("host veth name %q is longer than 15 bytes", p.HostVeth)
	}
	p.Netns = "/var/run/netns/" + p.Name
	l.mu.Lock()
	l.pods[p.Name] = p
	l.mu.Unlock()
	podNs, err := newNamedNetns(p.Name)
	if err == nil {
		err = l.plumbVeth(p, podNs)
		podNs.Close()
	}
	if err == nil && s.NoIPv6 {
		err = DisableIPv6(p.Netns)
	}
	if err != nil {
		l.RemovePod(p)
		return nil, fmt.Errorf("creating pod %s: %w", p.Name, err)
	}
	return p, nil
}

// ReplaceVeth deletes the pod's veth, if any, and creates a new pair with
// the same names and addresses (a new host ifindex), as a CNI plugin
// re-plumbing a sandbox does.
func (l *Lab) ReplaceVeth(p *Pod) error {
	if err := l.DeleteVeth(p); err != nil {
		return err
	}
	podNs, err := netns.GetFromPath(p.Netns)
	if err != nil {
		return err
	}
	defer podNs.Close()
	return l.plumbVeth(p, podNs)
}

// nodeHandle opens a netlink handle in the node netns.
func (l *Lab) nodeHandle() (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(l.NodeNetns())
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE) // only rtnetlink: a kernel without xfrm or nfnetlink (Debian 5.10 guests) refuses the others with EPROTONOSUPPORT
}

// handles opens netlink handles in the node netns and in podNs.
func (l *Lab) handles(podNs netns.NsHandle) (node, pod *netlink.Handle, err error) {
	if node, err = l.nodeHandle(); err != nil {
		return nil, nil, err
	}
	if pod, err = netlink.NewHandleAt(podNs, unix.NETLINK_ROUTE); err != nil {
		node.Close()
		return nil, nil, err
	}
	return node, pod, nil
}

func (l *Lab) plumbVeth(p *Pod, podNs netns.NsHandle) error {
	nh, ph, err := l.handles(podNs)
	if err != nil {
		return err
	}
	defer nh.Close()
	defer ph.Close()
	s := p.spec
	if s.PrefixLen == 0 {
		s.PrefixLen = 24 // a Pod made by hand
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.HostVeth, MTU: s.MTU}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNs))}
	if s.MTU != 0 {
		veth.PeerMTU = uint32(s.MTU)
	}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", p.HostVeth, err)
	}
	mask := net.CIDRMask(s.PrefixLen, 32)
	host, err := nh.LinkByName(p.HostVeth)
	if err != nil {
		return err
	}
	if err := nh.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: p.HostIP, Mask: mask}}); err != nil {
		return fmt.Errorf("address on %s: %w", p.HostVeth, err)
	}
	if err := nh.LinkSetUp(host); err != nil {
		return err
	}
	lo, err := ph.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := ph.LinkSetUp(lo); err != nil {
		return err
	}
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := ph.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: p.IP, Mask: mask}}); err != nil {
		return fmt.Errorf("address on %s eth0: %w", p.Name, err)
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return err
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: p.HostIP}); err != nil {
		return fmt.Errorf("default route in %s: %w", p.Name, err)
	}
	if s.StaticNeighbours {
		for _, n := range []struct {
			h    *netlink.Handle
			link netlink.Link
			ip   net.IP
			mac  net.HardwareAddr
		}{{ph, eth0, p.HostIP, host.Attrs().HardwareAddr}, {nh, host, p.IP, eth0.Attrs().HardwareAddr}} {
			err := n.h.NeighSet(&netlink.Neigh{LinkIndex: n.link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: n.ip, HardwareAddr: n.mac})
			if err != nil {
				return fmt.Errorf("permanent neighbour %s on %s: %w", n.ip, n.link.Attrs().Name, err)
			}
		}
	}
	return nil
}

// DeleteVeth deletes a pod's host veth (its eth0 goes with it), as a CNI
// DEL does, leaving the netns.
func (l *Lab) DeleteVeth(p *Pod) error {
	nh, err := l.nodeHandle()
	if err != nil {
		return err
	}
	defer nh.Close()
	link, err := nh.LinkByName(p.HostVeth)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return nh.LinkDel(link)
}

// RemovePod deletes a pod's veth and netns; a pod already gone is fine.
func (l *Lab) RemovePod(p *Pod) error {
	err := l.DeleteVeth(p)
	err = errors.Join(err, removeNamedNetns(p.Netns))
	l.mu.Lock()
	delete(l.pods, p.Name)
	l.mu.Unlock()
	return err
}

// newNamedNetns creates /var/run/netns/<name> as `ip netns add` does, on a
// locked thread that is then discarded (it ends in the new netns).
func newNamedNetns(name string) (netns.NsHandle, error) {
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- res{h, err}
	}()
	r := <-ch
	if r.err != nil {
		return r.h, fmt.Errorf("creating netns %s: %w", name, r.err)
	}
	return r.h, nil
}

// removeNamedNetns undoes newNamedNetns (`ip netns del`); the netns goes
// when nothing else holds it.
func removeNamedNetns(path string) error {
	var err error
	if uerr := unix.Unmount(path, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.ENOENT) && !errors.Is(uerr, unix.EINVAL) {
		err = uerr
	}
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// Sysctl sets a sysctl (a /proc/sys path such as "net/ipv4/ip_forward")
// inside the netns at nsPath.
func Sysctl(nsPath, key, value string) error {
	return podnet.Do(nsPath, func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, nsPath, err)
		}
		return nil
	})
}

// DisableIPv6 turns IPv6 off in the netns at nsPath, on its interfaces
// and on those made later.
func DisableIPv6(nsPath string) error {
	for _, k := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
		if err := Sysctl(nsPath, k, "1"); err != nil {
			return err
		}
	}
	return nil
}
