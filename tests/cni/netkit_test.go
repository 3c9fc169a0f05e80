package cni

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// addNetkitPod is netlab.AddPod with a netkit pair (L2 mode, as Cilium's
// netkit-l2) instead of a veth: the primary in the node, the peer as the
// pod's eth0. It skips where the kernel has no netkit (before 6.7, or not
// built).
func addNetkitPod(t *testing.T, f *fixture, name string, subnet int) *netlab.Pod {
	t.Helper()
	p := &netlab.Pod{
		Name:     f.lab.Prefix + "-" + name,
		HostVeth: fmt.Sprintf("%sk%d", f.lab.Prefix, subnet),
		IP:       net.IPv4(10, 213, byte(subnet), 2).To4(),
		HostIP:   net.IPv4(10, 213, byte(subnet), 1).To4(),
	}
	p.Netns = "/var/run/netns/" + p.Name
	if out, err := exec.Command("ip", "netns", "add", p.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.Name).Run() })
	pns, err := netns.GetFromPath(p.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	err = podnet.Do("/var/run/netns/"+f.lab.Node, func() error {
		nk := &netlink.Netkit{LinkAttrs: netlink.LinkAttrs{Name: p.HostVeth}, Mode: netlink.NETKIT_MODE_L2,
			Policy: netlink.NETKIT_POLICY_FORWARD, PeerPolicy: netlink.NETKIT_POLICY_FORWARD}
		nk.SetPeerAttrs(&netlink.LinkAttrs{Name: "eth0", Namespace: netlink.NsFd(int(pns))})
		return netlink.LinkAdd(nk)
	})
	if err != nil {
		t.Skipf("no netkit here: %v", err)
	}
	f.lab.In(f.lab.Node, "ip", "addr", "add", p.HostIP.String()+"/24", "dev", p.HostVeth)
	f.lab.In(f.lab.Node, "ip", "link", "set", p.HostVeth, "up")
	f.lab.In(p.Name, "ip", "link", "set", "lo", "up")
	f.lab.In(p.Name, "ip", "addr", "add", p.IP.String()+"/24", "dev", "eth0")
	f.lab.In(p.Name, "ip", "link", "set", "eth0", "up")
	f.lab.In(p.Name, "ip", "link", "set", "dev", "eth0", "gso_max_segs", "1")
	f.lab.In(p.Name, "ip", "route", "add", "default", "via", p.HostIP.String())
	return p
}

// TestNetkitPodSide: a pod on a netkit pair (Cilium's netkit mode) is
// found like a veth pod, and its rules run on its own interface, where no
// netkit program on the host end can skip them: both directions hold.
func TestNetkitPodSide(t *testing.T) {
	f := setup(t)
	nk := addNetkitPod(t, f, "nk", 9)
	ifc := f.iface(t, nk)
	if ifc.Pod.NetnsPath == "" || !strings.HasPrefix(ifc.Pod.IfName, "eth0") {
		t.Fatalf("netkit pod end not found: %+v", ifc)
	}
	ifc.PodSide = [2]bool{true, true}
	var pol rules.Policy
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: uint64(limit), Mode: rules.ModeDrop}
	pol[rules.Ingress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: uint64(limit), Mode: rules.ModeDrop}
	f.apply(t, ifc, pol)
	holds(t, "netkit pod egress, pod-side", nk, f.b)
	holds(t, "netkit pod ingress, pod-side", f.b, nk)
	e := f.judge(t, ifc, nk, f.b)
	if !e[rules.Egress].Enforced || !e[rules.Egress].PodSide {
		t.Fatalf("netkit egress: %+v", e[rules.Egress])
	}
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
}
