package shaper

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

type fixture struct {
	lab  *netlab.Lab
	dp   *datapath.Datapath
	sh   *Shaper
	a, b *netlab.Pod
}

func setup(t *testing.T) *fixture {
	t.Helper()
	lab := netlab.New(t, "sh")
	f := &fixture{lab: lab, a: lab.AddPod("a"), b: lab.AddPod("b")}
	dp, err := datapath.Open(netlab.PinDir(t, "kssh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	f.dp, f.sh = dp, New(dp)
	return f
}

// inNode runs fn in the node netns, where the host veths live.
func (f *fixture) inNode(t *testing.T, fn func() error) {
	t.Helper()
	if err := podnet.Do("/var/run/netns/"+f.lab.Node, fn); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) iface(t *testing.T, p *netlab.Pod) Interface {
	t.Helper()
	var ifc Interface
	f.inNode(t, func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err != nil {
			return err
		}
		pod, err := podnet.PodEnd(p.HostVeth)
		ifc = Interface{Name: p.HostVeth, Index: l.Index, Pod: pod}
		return err
	})
	return ifc
}

func (f *fixture) apply(t *testing.T, ifc Interface, pol rules.Policy) {
	t.Helper()
	f.inNode(t, func() error { return f.sh.Apply(ifc, pol) })
}

func rate(t *testing.T, from, to *netlab.Pod) float64 {
	t.Helper()
	r, err := netlab.TCPRate(from, to, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func bw(bits uint64, mode rules.BandwidthMode) *rules.Bandwidth {
	return &rules.Bandwidth{RateBitsPerSec: bits, Mode: mode}
}

// TestDirectionsWithRealTraffic proves, with real TCP through a routed node,
// that an egress rule slows what the pod sends and not what it receives,
// and an ingress rule the opposite.
func TestDirectionsWithRealTraffic(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	// The limit must sit well below what the veth carries unshaped: several
	// Gbit/s on a host, 100-500 Mbit/s in an emulated (qemu TCG) guest. So
	// the unshaped rates are measured first, and the limit is 20 Mbit/s or
	// an eighth of the slower direction, whichever is lower.
	up0, down0 := rate(t, f.a, f.b), rate(t, f.b, f.a)
	limit := min(20e6, min(up0, down0)/8)
	t.Logf("unshaped: upload %.1f, download %.1f Mbit/s; limit %.1f Mbit/s", up0/1e6, down0/1e6, limit/1e6)
	// Bounds: 2 s at the limit plus the bucket's initial credit is at most
	// 1.03× the target; 1.3× leaves room for timing noise, never for a
	// missing limit. Unshaped, a direction keeps at least half its own
	// unshaped rate: ≥ 4× the limit.
	check := func(what string, got float64, shaped bool) {
		t.Helper()
		t.Logf("%s: %.1f Mbit/s", what, got/1e6)
		if shaped && (got > 1.3*limit || got < 0.3*limit) {
			t.Errorf("%s: %.1f Mbit/s, want about %.1f", what, got/1e6, limit/1e6)
		}
		if !shaped && got < 4*limit {
			t.Errorf("%s: %.1f Mbit/s, want unshaped (> %.1f)", what, got/1e6, 4*limit/1e6)
		}
	}
	var pol rules.Policy
	pol[rules.Egress].Bandwidth = bw(uint64(limit), rules.ModeDrop)
	f.apply(t, ifc, pol)
	check("egress rule, pod uploads", rate(t, f.a, f.b), true)
	check("egress rule, pod downloads", rate(t, f.b, f.a), false)

	pol = rules.Policy{}
	pol[rules.Ingress].Bandwidth = bw(uint64(limit), rules.ModeDrop)
	f.apply(t, ifc, pol)
	check("ingress rule, pod uploads", rate(t, f.a, f.b), false)
	check("ingress rule, pod downloads", rate(t, f.b, f.a), true)
}

// TestTBFModeBothDirections checks the qdisc-backed mode: a tbf on the
// pod's eth0 (egress) and on the host veth (ingress), counted by BPF.
func TestTBFModeBothDirections(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	var pol rules.Policy
	pol[rules.Egress].Bandwidth = bw(30e6, rules.ModeTBF)
	pol[rules.Ingress].Bandwidth = bw(30e6, rules.ModeTBF)
	f.apply(t, ifc, pol)
	if out := f.lab.In(f.a.Name, "tc", "qdisc", "show", "dev", "eth0"); !strings.Contains(out, "tbf 4b53:") {
		t.Fatalf("pod eth0 has no kubeshaper tbf:\n%s", out)
	}
	for _, c := range []struct {
		what     string
		from, to *netlab.Pod
	}{{"upload", f.a, f.b}, {"download", f.b, f.a}} {
		got := rate(t, c.from, c.to)
		t.Logf("tbf %s: %.1f Mbit/s", c.what, got/1e6)
		if got > 1.3*30e6 || got < 0.5*30e6 {
			t.Errorf("tbf %s: %.1f Mbit/s, want about 30", c.what, got/1e6)
		}
	}
	// Back to drop mode: the tbfs go, the kernel default returns.
	pol[rules.Egress].Bandwidth = bw(30e6, rules.ModeDrop)
	pol[rules.Ingress].Bandwidth = nil
	f.apply(t, ifc, pol)
	if out := f.lab.In(f.a.Name, "tc", "qdisc", "show", "dev", "eth0"); strings.Contains(out, "tbf") {
		t.Fatalf("pod eth0 kept a tbf after the mode changed:\n%s", out)
	}
	if out := f.lab.In(f.lab.Node, "tc", "qdisc", "show", "dev", ifc.Name); strings.Contains(out, "tbf") {
		t.Fatalf("host veth kept a tbf after the rule went:\n%s", out)
	}
}

func ourFilters(t *testing.T, f *fixture, dev string) []string {
	t.Helper()
	var lines []string
	for _, hook := range []string{"ingress", "egress"} {
		out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", dev, hook)
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "kubeshaper") {
				lines = append(lines, hook+": "+strings.TrimSpace(l))
			}
		}
	}
	return lines
}

func TestApplyIsIdempotentAndClearLeavesNothing(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	// Another tool's filter on the same hook must survive everything.
	f.lab.In(f.lab.Node, "tc", "qdisc", "add", "dev", ifc.Name, "clsact")
	f.lab.In(f.lab.Node, "tc", "filter", "add", "dev", ifc.Name, "ingress", "prio", "100", "u32", "match", "u32", "0", "0", "classid", "1:1")
	var pol rules.Policy
	pol[rules.Egress].Loss = &rules.Loss{Kind: rules.LossUniform, Percent: 1}
	for range 3 {
		f.apply(t, ifc, pol)
	}
	if got := ourFilters(t, f, ifc.Name); len(got) != 2 {
		t.Fatalf("after 3 applies: %d kubeshaper filters, want 2 (one per hook):\n%s", len(got), strings.Join(got, "\n"))
	}
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
	if got := ourFilters(t, f, ifc.Name); len(got) != 0 {
		t.Fatalf("after clear: %s", strings.Join(got, "\n"))
	}
	keys, err := f.dp.Keys()
	if err != nil || len(keys) != 0 {
		t.Fatalf("after clear: map keys %v (err %v)", keys, err)
	}
	if out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", ifc.Name, "ingress"); !strings.Contains(out, "u32") {
		t.Fatalf("clear removed another tool's filter:\n%s", out)
	}
	f.inNode(t, func() error { return f.sh.Clear(ifc) }) // twice is fine
}

func TestPaceRefusedWithoutFQ(t *testing.T) {
	if out, _ := exec.Command("modinfo", "sch_fq").CombinedOutput(); strings.Contains(string(out), "filename") {
		t.Skip("this kernel has sch_fq; the refusal is for kernels without it")
	}
	f := setup(t)
	ifc := f.iface(t, f.a)
	for _, d := range rules.Directions {
		for _, p := range []rules.DirectionPolicy{
			{Bandwidth: bw(10e6, rules.ModePace)},
			{Delay: &rules.Delay{Delay: 20 * time.Millisecond}},
		} {
			var pol rules.Policy
			pol[d] = p
			var err error
			f.inNode(t, func() error { err = f.sh.Apply(ifc, pol); return nil })
			if err == nil || !strings.Contains(err.Error(), "sch_fq") {
				t.Fatalf("%s %s without fq: err %v, want one naming sch_fq", d, p, err)
			}
			if got := ourFilters(t, f, ifc.Name); len(got) != 0 {
				t.Fatalf("refused rule left filters: %v", got)
			}
		}
	}
}
