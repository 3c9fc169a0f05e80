package guest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/tests/kfeature"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// fixture is a node with two pods, a (the shaped one) and b (its peer),
// and one loaded datapath pinned in a private directory.
type fixture struct {
	lab  *netlab.Lab
	sh   *shaper.Shaper
	a, b *netlab.Pod
}

// needFQ skips where the kernel is built without sch_fq and fails where it
// is built with it but fq still cannot be created.
func needFQ(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, qdiscs, BPF")
	}
	kfeature.SkipIfNotConfigured(t, "CONFIG_NET_SCH_FQ", kfeature.HaveSchFQ())
}

func setup(t *testing.T) *fixture {
	t.Helper()
	needFQ(t)
	lab := netlab.New(t, "gu")
	f := &fixture{lab: lab, a: lab.AddPod("a"), b: lab.AddPod("b")}
	b := make([]byte, 4)
	rand.Read(b)
	dir := datapath.DefaultBPFFS + "/ksguest-" + hex.EncodeToString(b)
	dp, err := datapath.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		datapath.RemovePins(dir)
		os.Remove(dir)
	})
	f.sh = shaper.New(dp)
	return f
}

func (f *fixture) inNode(t *testing.T, fn func() error) {
	t.Helper()
	if err := podnet.Do("/var/run/netns/"+f.lab.Node, fn); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) iface(t *testing.T, p *netlab.Pod) shaper.Interface {
	t.Helper()
	var ifc shaper.Interface
	f.inNode(t, func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err != nil {
			return err
		}
		pod, err := podnet.PodEnd(p.HostVeth)
		ifc = shaper.Interface{Name: p.HostVeth, Index: l.Index, Pod: pod}
		return err
	})
	return ifc
}

// errNotYet is returned by apply for rules pkg/shaper does not support yet
// (pace and delay on pod egress, at the time of writing).
var errNotYet = errors.New("not supported yet")

func (f *fixture) apply(t *testing.T, ifc shaper.Interface, pol rules.Policy) error {
	t.Helper()
	var err error
	f.inNode(t, func() error { err = f.sh.Apply(ifc, pol); return nil })
	if err != nil && strings.Contains(err.Error(), "not supported") && strings.Contains(err.Error(), "yet") {
		return errNotYet
	}
	if err != nil {
		t.Fatalf("apply %v to %s: %v", pol, ifc.Name, err)
	}
	return nil
}

// flow names a direction of the shaped pod a's traffic: the rule's
// direction, who sends to whom, and where kubeshaper's fq for it sits.
type flow struct {
	dir         rules.Direction
	from, to    *netlab.Pod
	fqNs, fqDev string
}

func (f *fixture) flows() []flow {
	return []flow{
		// What a receives: paced at the host veth's egress, its root fq.
		{rules.Ingress, f.b, f.a, "/var/run/netns/" + f.lab.Node, f.a.HostVeth},
		// What a sends: paced at a's own eth0 (pkg/shaper), its root fq.
		{rules.Egress, f.a, f.b, f.a.Netns, "eth0"},
	}
}
