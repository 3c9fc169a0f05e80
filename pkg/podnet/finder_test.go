package podnet

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// TestResolvePicksThePodAmongNamespacesSharingItsIP: the same address in
// a pod (veth to the node netns), in a container of another "host" (veth
// to a netns that is not the node's) and on a veth looping inside its own
// netns: Resolve takes
// the pod. A second pod with that address behind a node veth makes it
// ambiguous: an error naming both, never a guess.
func TestResolvePicksThePodAmongNamespacesSharingItsIP(t *testing.T) {
	requireRoot(t)
	sfx := randomSuffix(t)
	// An address no other test uses: 10.79.<random>.10.
	ip := net.IPv4(10, 79, sfx[0]^sfx[1], 10)
	cidr := ip.String() + "/24"
	node := boundNetns(t, nsPrefix+sfx+"-node")
	pod := boundNetns(t, nsPrefix+sfx+"-pod")
	node.ip(t, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod.ref)
	node.ip(t, "link", "set", "vpod", "up")
	pod.ip(t, "addr", "add", cidr, "dev", "eth0")
	pod.ip(t, "link", "set", "eth0", "up")

	other := boundNetns(t, nsPrefix+sfx+"-other")
	ctr := boundNetns(t, nsPrefix+sfx+"-ctr")
	other.ip(t, "link", "add", "vctr", "type", "veth", "peer", "name", "eth0", "netns", ctr.ref)
	ctr.ip(t, "addr", "add", cidr, "dev", "eth0")
	ctr.ip(t, "link", "set", "eth0", "up")
	loop := boundNetns(t, nsPrefix+sfx+"-loop")
	loop.ip(t, "link", "add", "x0", "type", "veth", "peer", "name", "x1")
	loop.ip(t, "addr", "add", cidr, "dev", "x0")

	f := NewFinder()
	f.MinRescan = 0 // every lookup after Forget rescans
	var (
		path string
		hv   HostVeth
		err  error
	)
	resolve := func() {
		t.Helper()
		f.Forget(ip)
		if e := Do(node.path, func() error { path, hv, err = f.Resolve(ip); return nil }); e != nil {
			t.Fatal(e)
		}
	}
	resolve()
	if err != nil {
		t.Fatalf("Resolve(%s): %v", ip, err)
	}
	if inode(t, path) != inode(t, pod.path) || hv.Name != "vpod" || hv.PodIfName != "eth0" {
		t.Fatalf("Resolve(%s) = %s %+v, want the pod %s behind vpod", ip, path, hv, pod.path)
	}
	// NetnsFor cannot choose: it says so.
	if e := Do(node.path, func() error { _, err = f.NetnsFor(ip); return nil }); e != nil {
		t.Fatal(e)
	}
	if !errors.Is(err, ErrAmbiguousIP) {
		t.Fatalf("NetnsFor with three holders: %v, want ErrAmbiguousIP", err)
	}

	twin := boundNetns(t, nsPrefix+sfx+"-twin")
	node.ip(t, "link", "add", "vtwin", "type", "veth", "peer", "name", "eth0", "netns", twin.ref)
	twin.ip(t, "addr", "add", cidr, "dev", "eth0")
	resolve()
	if !errors.Is(err, ErrAmbiguousIP) {
		t.Fatalf("two pods behind node veths: %v, want ErrAmbiguousIP", err)
	}
	for _, want := range []string{"vpod", "vtwin", pod.path, twin.path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	t.Log(err)
}
