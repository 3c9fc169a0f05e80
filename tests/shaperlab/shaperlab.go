// Package shaperlab is the node-level test fixture shared by the suites
// that drive pkg/shaper directly (outside pkg/shaper itself, whose own
// tests cannot import it): a netlab node with two pods, a (the shaped one)
// and b (its peer), and one datapath loaded from a private pin directory.
package shaperlab

import (
	"net"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// Fixture is one node, two pods and a loaded datapath.
type Fixture struct {
	Lab  *netlab.Lab
	DP   *datapath.Datapath
	Sh   *shaper.Shaper
	A, B *netlab.Pod
	// PinDir holds the datapath's pins (removed in t.Cleanup).
	PinDir string
}

// New builds the fixture; tag names the test package in netns and link
// names and in the pin directory.
func New(t testing.TB, tag string) *Fixture {
	t.Helper()
	lab := netlab.New(t, tag)
	f := &Fixture{Lab: lab, A: lab.AddPod("a"), B: lab.AddPod("b"), PinDir: netlab.PinDir(t, "ks"+tag)}
	dp, err := datapath.Open(f.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	f.DP, f.Sh = dp, shaper.New(dp)
	return f
}

// NodeNetns is the path of the node's netns.
func (f *Fixture) NodeNetns() string { return "/var/run/netns/" + f.Lab.Node }

// InNode runs fn in the node netns, where the host veths live; an error
// fails the test.
func (f *Fixture) InNode(t testing.TB, fn func() error) {
	t.Helper()
	if err := podnet.Do(f.NodeNetns(), fn); err != nil {
		t.Fatal(err)
	}
}

// Iface is p's host veth with its pod end, as the agent resolves it.
func (f *Fixture) Iface(t testing.TB, p *netlab.Pod) shaper.Interface {
	t.Helper()
	return Iface(t, f.NodeNetns(), p)
}

// Iface is p's host veth in the node netns at nodeNetns, with its pod end.
func Iface(t testing.TB, nodeNetns string, p *netlab.Pod) shaper.Interface {
	t.Helper()
	var ifc shaper.Interface
	err := podnet.Do(nodeNetns, func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err != nil {
			return err
		}
		pod, err := podnet.PodEnd(p.HostVeth)
		ifc = shaper.Interface{Name: p.HostVeth, Index: l.Index, Pod: pod}
		return err
	})
	if err != nil {
		t.Fatalf("resolving %s: %v", p.HostVeth, err)
	}
	return ifc
}

// Apply makes ifc carry pol, in the node netns; the error is returned.
func (f *Fixture) Apply(ifc shaper.Interface, pol rules.Policy) error {
	return podnet.Do(f.NodeNetns(), func() error { return f.Sh.Apply(ifc, pol) })
}
