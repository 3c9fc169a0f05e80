package podnet

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testPod is one pod's end of a topology: its netns, IP, and the name of
// its host-side veth in the node netns.
type testPod struct {
	ns       testNetns
	ip       net.IP
	hostVeth string
}

type holder func(t *testing.T, name string) testNetns

var holders = map[string]holder{
	// held by a bind mount, as CNI plugins and `ip netns add` do
	"bindmount": boundNetns,
	// held only by a process, as a container runtime without pinning does
	"process": func(t *testing.T, _ string) testNetns { return processNetns(t) },
}

// bridgeTopology: host veths enslaved to a bridge in a "node" netns
// (the CNI bridge plugin's shape).
func bridgeTopology(t *testing.T, hold holder) (node testNetns, pods []testPod) {
	sfx := randomSuffix(t)
	node = boundNetns(t, nsPrefix+sfx+"-node")
	node.ip(t, "link", "add", "br0", "type", "bridge")
	node.ip(t, "addr", "add", "10.77.0.1/24", "dev", "br0")
	node.ip(t, "link", "set", "br0", "up")
	for i := 1; i <= 2; i++ {
		pod := testPod{
			ns:       hold(t, fmt.Sprintf("%s%s-pod%d", nsPrefix, sfx, i)),
			ip:       net.IPv4(10, 77, 0, byte(10+i)),
			hostVeth: fmt.Sprintf("vbr%d", i),
		}
		node.ip(t, "link", "add", pod.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", pod.ns.ref)
		node.ip(t, "link", "set", pod.hostVeth, "master", "br0", "up")
		pod.ns.ip(t, "addr", "add", pod.ip.String()+"/24", "dev", "eth0")
		pod.ns.ip(t, "link", "set", "eth0", "up")
		pod.ns.ip(t, "route", "add", "default", "via", "10.77.0.1")
		pods = append(pods, pod)
	}
	return node, pods
}

// routedTopology: no bridge, a /32 per pod routed to its host veth, and
// the pod routing via a link-local gateway (the ptp / Calico shape).
func routedTopology(t *testing.T, hold holder) (node testNetns, pods []testPod) {
	sfx := randomSuffix(t)
	node = boundNetns(t, nsPrefix+sfx+"-node")
	for i := 1; i <= 2; i++ {
		pod := testPod{
			ns:       hold(t, fmt.Sprintf("%s%s-pod%d", nsPrefix, sfx, i)),
			ip:       net.IPv4(10, 78, 0, byte(10+i)),
			hostVeth: fmt.Sprintf("vrt%d", i),
		}
		node.ip(t, "link", "add", pod.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", pod.ns.ref)
		node.ip(t, "link", "set", pod.hostVeth, "up")
		node.ip(t, "route", "add", pod.ip.String()+"/32", "dev", pod.hostVeth)
		pod.ns.ip(t, "addr", "add", pod.ip.String()+"/32", "dev", "eth0")
		pod.ns.ip(t, "link", "set", "eth0", "up")
		pod.ns.ip(t, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		pod.ns.ip(t, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		pods = append(pods, pod)
	}
	return node, pods
}

func linkIndex(t *testing.T, nsPath, name string) int {
	t.Helper()
	var idx int
	err := Do(nsPath, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		return nil
	})
	if err != nil {
		t.Fatalf("%s in %s: %v", name, nsPath, err)
	}
	return idx
}

// checkBothWays resolves pod → host veth and host veth → pod, from inside
// the node netns (a non-root netns, as when the CLI runs under
// `ip netns exec node`), and checks both against what ip created.
func checkBothWays(t *testing.T, node testNetns, pod testPod, heldBy string) {
	t.Helper()
	want := HostVeth{
		Name:       pod.hostVeth,
		Index:      linkIndex(t, node.path, pod.hostVeth),
		PodIfName:  "eth0",
		PodIfIndex: linkIndex(t, pod.ns.path, "eth0"),
	}
	var byIP, byName HostVeth
	var end PodVeth
	err := Do(node.path, func() error {
		var err error
		if byIP, err = HostPeer(pod.ns.path, pod.ip); err != nil {
			return err
		}
		if byName, err = HostPeer(pod.ns.path, nil); err != nil {
			return err
		}
		end, err = PodEnd(pod.hostVeth)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if byIP != want || byName != want {
		t.Errorf("HostPeer: by IP %+v, by eth0 %+v; want %+v", byIP, byName, want)
	}
	if inode(t, end.NetnsPath) != inode(t, pod.ns.path) {
		t.Errorf("PodEnd(%s).NetnsPath = %s, not the pod's netns %s", pod.hostVeth, end.NetnsPath, pod.ns.path)
	}
	switch heldBy {
	case "bindmount":
		if end.NetnsPath != pod.ns.path {
			t.Errorf("PodEnd found %s, want the bind mount %s", end.NetnsPath, pod.ns.path)
		}
	case "process":
		if !strings.HasPrefix(end.NetnsPath, "/proc/") {
			t.Errorf("PodEnd found %s, want a /proc/<pid>/ns/net path", end.NetnsPath)
		}
	}
	if end.IfIndex != want.PodIfIndex || end.IfName != "eth0" {
		t.Errorf("PodEnd(%s) = %+v, want ifindex %d eth0", pod.hostVeth, end, want.PodIfIndex)
	}
}

func TestResolveBothWays(t *testing.T) {
	requireRoot(t)
	topologies := map[string]func(*testing.T, holder) (testNetns, []testPod){
		"bridge": bridgeTopology,
		"routed": routedTopology,
	}
	for topoName, build := range topologies {
		for heldBy, hold := range holders {
			t.Run(topoName+"/"+heldBy, func(t *testing.T) {
				node, pods := build(t, hold)
				for _, pod := range pods {
					checkBothWays(t, node, pod, heldBy)
				}
			})
		}
	}
}

// From a netns that does not hold the host end, HostPeer must not return
// whatever link happens to carry the same ifindex there.
func TestHostPeerFromWrongNetns(t *testing.T) {
	requireRoot(t)
	_, pods := bridgeTopology(t, holders["bindmount"])
	elsewhere := boundNetns(t, nsPrefix+randomSuffix(t)+"-elsewhere")
	// Local veth pairs occupy the low ifindexes, where the pod's peer index
	// points, so a lookup by index alone would find a veth here.
	for i := 0; i < 3; i++ {
		elsewhere.ip(t, "link", "add", fmt.Sprintf("xa%d", i), "type", "veth", "peer", "name", fmt.Sprintf("xb%d", i))
	}
	for _, pod := range pods {
		err := Do(elsewhere.path, func() error {
			_, err := HostPeer(pod.ns.path, pod.ip)
			return err
		})
		if !errors.Is(err, ErrPeerNotFound) {
			t.Errorf("HostPeer(%s) from another netns: %v, want ErrPeerNotFound", pod.ip, err)
		}
		t.Log(err)
	}
}

func TestNotVethAndNoInterface(t *testing.T) {
	requireRoot(t)
	sfx := randomSuffix(t)
	pod := boundNetns(t, nsPrefix+sfx+"-notveth")
	// eth0 of the first non-veth kind this kernel has (dummy is not built
	// into every test kernel; ifb and bridge stand in for it).
	kind := ""
	for _, k := range []string{"dummy", "ifb", "bridge"} {
		if exec.Command("nsenter", "--net="+pod.path, "ip", "link", "add", "eth0", "type", k).Run() == nil {
			kind = k
			break
		}
	}
	if kind == "" {
		t.Fatal("cannot create a non-veth eth0 (tried dummy, ifb, bridge)")
	}
	pod.ip(t, "addr", "add", "10.79.0.2/24", "dev", "eth0")
	pod.ip(t, "link", "set", "eth0", "up")

	for _, ip := range []net.IP{net.IPv4(10, 79, 0, 2), nil} {
		if _, err := HostPeer(pod.path, ip); !errors.Is(err, ErrNotVeth) {
			t.Errorf("HostPeer(%s eth0, %v): %v, want ErrNotVeth", kind, ip, err)
		} else {
			t.Logf("%s eth0: %v", kind, err)
		}
	}
	if _, err := HostPeer(pod.path, net.IPv4(10, 79, 0, 99)); !errors.Is(err, ErrNoInterface) {
		t.Errorf("HostPeer(IP nobody holds): %v, want ErrNoInterface", err)
	}

	// macvlan, as a pod on a macvlan CNI has; skipped where the kernel lacks it.
	err := exec.Command("nsenter", "--net="+pod.path, "ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge").Run()
	if err != nil {
		t.Logf("macvlan unavailable (%v): only the %s case ran", err, kind)
	} else {
		pod.ip(t, "addr", "add", "10.79.1.2/24", "dev", "mv0")
		_, err := HostPeer(pod.path, net.IPv4(10, 79, 1, 2))
		if !errors.Is(err, ErrNotVeth) {
			t.Errorf("HostPeer(macvlan): %v, want ErrNotVeth", err)
		}
		t.Logf("macvlan: %v", err)
	}

	node, _ := bridgeTopology(t, holders["bindmount"])
	err = Do(node.path, func() error {
		if _, err := PodEnd("br0"); !errors.Is(err, ErrNotVeth) {
			return fmt.Errorf("PodEnd(br0): %v, want ErrNotVeth", err)
		}
		if _, err := PodEnd("nosuchveth"); !errors.Is(err, ErrNoInterface) {
			return fmt.Errorf("PodEnd(nosuchveth): %v, want ErrNoInterface", err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// A veth whose peer sits in the same netns is no pod's veth.
func TestPeerInSameNetns(t *testing.T) {
	requireRoot(t)
	ns := boundNetns(t, nsPrefix+randomSuffix(t)+"-same")
	ns.ip(t, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	ns.ip(t, "addr", "add", "10.80.0.2/24", "dev", "eth0")
	if _, err := HostPeer(ns.path, net.IPv4(10, 80, 0, 2)); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("HostPeer: %v, want ErrPeerNotFound", err)
	}
	err := Do(ns.path, func() error {
		_, err := PodEnd("peer0")
		return err
	})
	if !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("PodEnd: %v, want ErrPeerNotFound", err)
	}
}

// A pod netns kept alive only by an open file descriptor has no path
// PodEnd can find: it must say so, not guess.
func TestPodEndUnnamedNetns(t *testing.T) {
	requireRoot(t)
	sfx := randomSuffix(t)
	node := boundNetns(t, nsPrefix+sfx+"-node")
	name := nsPrefix + sfx + "-gone"
	run(t, "ip", "netns", "add", name)
	h, err := netns.GetFromName(name)
	if err != nil {
		run(t, "ip", "netns", "del", name)
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() }) // the last reference: the netns dies here
	node.ip(t, "link", "add", "vgone", "type", "veth", "peer", "name", "eth0", "netns", name)
	run(t, "ip", "netns", "del", name) // unmount: only our fd holds it now

	err = Do(node.path, func() error {
		_, err := PodEnd("vgone")
		return err
	})
	if !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("PodEnd of a veth into an unnamed netns: %v, want ErrPeerNotFound", err)
	}
}
