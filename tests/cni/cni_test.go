// Package cni proves kubeshaper's coexistence with eBPF CNIs on synthetic
// setups: "another tool's" programs (tests/foreign) on the pods' veths the
// ways Cilium and Calico put them there, and kubeshaper's rule either
// holding with real TCP or reported as not enforced — never silence.
package cni

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/foreign"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// limit is the rule of every test: 50 Mbit/s, or an eighth of what the
// veths carry unshaped where that is less (a qemu guest with one-frame
// skbs: ~100 Mbit/s), so that a bypass is always ≥ 4× the limit.
var limit = 50e6

var limitOnce sync.Once

// scaleLimit measures the unshaped wire rate once per run and lowers the
// limit where needed.
func scaleLimit(t *testing.T, f *fixture) {
	if bench.On() {
		return // the figures are for the 50 Mbit/s rule
	}
	limitOnce.Do(func() {
		un := wireRateOver(t, f.a, f.b, time.Second)
		limit = min(50e6, un/8)
		t.Logf("unshaped wire rate %.1f Mbit/s: limit %.1f Mbit/s", un/1e6, limit/1e6)
	})
}

type fixture struct {
	lab  *netlab.Lab
	dp   *datapath.Datapath
	sh   *shaper.Shaper
	a, b *netlab.Pod
	pins string
	// cliPins is the --bpffs of the CLI runs of the benchmark.
	cliPins string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	lab := netlab.New(t, "cn")
	f := &fixture{lab: lab, a: lab.AddPod("a"), b: lab.AddPod("b")}
	// One frame per skb: the receiver's byte counter is then the wire
	// (what the bucket charges), not payload plus one header per 64 KB.
	for _, p := range []*netlab.Pod{f.a, f.b} {
		lab.In(p.Name, "ip", "link", "set", "dev", "eth0", "gso_max_segs", "1")
	}
	b := make([]byte, 4)
	rand.Read(b)
	dir := datapath.DefaultBPFFS + "/kscn-" + hex.EncodeToString(b)
	dp, err := datapath.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f.pins = dir + "-foreign"
	if err := os.MkdirAll(f.pins, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		datapath.RemovePins(dir)
		os.RemoveAll(filepath.Join(dir, "tcx"))
		os.Remove(dir)
		os.RemoveAll(f.pins)
	})
	f.dp, f.sh = dp, shaper.New(dp)
	scaleLimit(t, f)
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

func (f *fixture) apply(t *testing.T, ifc shaper.Interface, pol rules.Policy) {
	t.Helper()
	f.inNode(t, func() error { return f.sh.Apply(ifc, pol) })
}

func egress() rules.Policy {
	var pol rules.Policy
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: uint64(limit), Mode: rules.ModeDrop}
	return pol
}

func ingress() rules.Policy {
	var pol rules.Policy
	pol[rules.Ingress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: uint64(limit), Mode: rules.ModeDrop}
	return pol
}

// foreignTCX attaches a foreign program to a host veth's tcx chain in the
// node netns; it goes with the netns.
func (f *fixture) foreignTCX(t *testing.T, kind string, tgt foreign.Target, ifindex int, tcIngress, head bool) *ebpf.Program {
	t.Helper()
	prog, err := foreign.Load(kind, tgt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	var l link.Link
	f.inNode(t, func() (err error) { l, err = foreign.AttachTCX(ifindex, tcIngress, head, prog); return err })
	t.Cleanup(func() { l.Close() })
	return prog
}

// wireRate sends TCP from → to for 3.5 s and returns the wire rate the
// receiver's IP stack took in over the last 2 s (after the bucket's initial
// credit is spent). Not eth0's rx counter: that counts packets before a
// pod-side ingress hook drops them (netlab.DeliveredWireBytes).
func wireRate(t *testing.T, from, to *netlab.Pod) float64 {
	t.Helper()
	return wireRateOver(t, from, to, 2*time.Second)
}

// wireRateOver is wireRate with a window of its own, after 1.5 s of TCP.
func wireRateOver(t *testing.T, from, to *netlab.Pod, window time.Duration) float64 {
	t.Helper()
	rx := func() uint64 {
		n, err := netlab.DeliveredWireBytes(to)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	done := make(chan error, 1)
	go func() { _, err := netlab.TCPRate(from, to, 1500*time.Millisecond+window); done <- err }()
	time.Sleep(1500 * time.Millisecond)
	b0, t0 := rx(), time.Now()
	time.Sleep(window)
	b1, t1 := rx(), time.Now()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return float64(b1-b0) * 8 / t1.Sub(t0).Seconds()
}

// holds checks the rule held: the receiver's wire rate in steady state.
// Bounds: the bucket passes at most rate×T plus what it holds at the
// window's start, at most its burst (500 ms of the rate: TCP backing off
// after a drop lets it refill): ≤ 1 + 0.5/2 = 1.25× over 2 s, exactly, for
// a correct build (measured 0.94-1.05). A bypass is ≥ 4× (a guest's veth
// carries hundreds of Mbit/s, a host's Gbit/s); a working limit ≥ 0.15×
// (TCP recovering from a policer's drops: ≥ 0.9 on this host, 0.36-0.7 in
// a qemu guest whose CPU is the bottleneck): only "traffic flows at all".
func holds(t *testing.T, what string, from, to *netlab.Pod) {
	t.Helper()
	got := wireRate(t, from, to)
	t.Logf("%s: wire %.2f Mbit/s (%.3f× the limit)", what, got/1e6, got/limit)
	if got > 1.25*limit || got < 0.15*limit {
		t.Fatalf("%s: %.1f Mbit/s, want the %.0f Mbit/s limit to hold", what, got/1e6, limit/1e6)
	}
}

// judge reads the placements, sends TCP from → to for 1 s and judges.
func (f *fixture) judge(t *testing.T, ifc shaper.Interface, from, to *netlab.Pod) [2]shaper.Enforcement {
	t.Helper()
	var pl [2]shaper.Placement
	var before, after shaper.Traffic
	f.inNode(t, func() error { pl = f.sh.Placements(ifc); before = f.sh.ReadTraffic(ifc); return nil })
	if _, err := netlab.TCPRate(from, to, time.Second); err != nil {
		t.Fatal(err)
	}
	f.inNode(t, func() error { after = f.sh.ReadTraffic(ifc); return nil })
	e := shaper.Judge(pl, &before, &after)
	t.Logf("judged: egress %+v; ingress %+v", e[rules.Egress], e[rules.Ingress])
	return e
}

// target addresses pod ifc's eth0 through its host veth, as a CNI's
// redirect would.
func (f *fixture) target(t *testing.T, ifc shaper.Interface) foreign.Target {
	t.Helper()
	tgt := foreign.Target{Ifindex: ifc.Index}
	f.inNode(t, func() error {
		hv, err := netlink.LinkByIndex(ifc.Index)
		if err == nil {
			tgt.SrcMAC = hv.Attrs().HardwareAddr
		}
		return err
	})
	if err := podnet.Do(ifc.Pod.NetnsPath, func() error {
		l, err := netlink.LinkByIndex(ifc.Pod.IfIndex)
		if err == nil {
			tgt.DstMAC = l.Attrs().HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return tgt
}

func (f *fixture) placements(t *testing.T, ifc shaper.Interface) [2]shaper.Placement {
	t.Helper()
	var pl [2]shaper.Placement
	f.inNode(t, func() error { pl = f.sh.Placements(ifc); return nil })
	return pl
}

func (f *fixture) hold(t *testing.T, ifc shaper.Interface) []shaper.Placement {
	t.Helper()
	var r []shaper.Placement
	f.inNode(t, func() (err error) { r, err = f.sh.Hold(ifc); return err })
	return r
}

func requireTCX(t *testing.T) {
	t.Helper()
	if !attach.TCXSupported() {
		t.Skip("the kernel has no tcx (6.6+)")
	}
}

// Present before the rule: Cilium ≥ 1.15's cil_from_container at the tail
// of the lxc's tcx ingress, returning TC_ACT_OK (the 16.1 Gbit/s
// against a 50 Mbit/s rule). kubeshaper goes to the tcx head, with no
// cls_bpf filter left to count a packet twice.
func TestForeignTCXTailBeforeApply(t *testing.T) {
	requireTCX(t)
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.foreignTCX(t, foreign.OK, foreign.Target{}, ifc.Index, true, false)
	f.apply(t, ifc, egress())
	pl := f.placements(t, ifc)
	if !pl[rules.Egress].First() || !strings.Contains(pl[rules.Egress].Attachment, "tcx link") {
		t.Fatalf("egress placement %+v: want first, on tcx", pl[rules.Egress])
	}
	if out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", ifc.Name, "ingress"); strings.Contains(out, "kubeshaper") {
		t.Fatalf("a kubeshaper cls_bpf filter is left beside the tcx link (packets counted twice):\n%s", out)
	}
	holds(t, "egress, foreign tcx OK at the tail", f.a, f.b)
	if e := f.judge(t, ifc, f.a, f.b); !e[rules.Egress].Enforced {
		t.Fatalf("egress not enforced: %s", e[rules.Egress].Reason)
	}
}

// Added after the rule, at the head, ending the hook with TC_ACT_OK or
// redirecting (TC_ACT_REDIRECT) straight to the destination pod's veth:
// first reported as bypassed (by the counters), then the position is
// retaken and the rule holds.
func TestForeignTCXHeadAfterApply(t *testing.T) {
	requireTCX(t)
	for _, kind := range []string{foreign.OK, foreign.Redirect} {
		t.Run(kind, func(t *testing.T) {
			f := setup(t)
			ifc, ifb := f.iface(t, f.a), f.iface(t, f.b)
			f.apply(t, ifc, egress())
			f.foreignTCX(t, kind, f.target(t, ifb), ifc.Index, true, true)
			e := f.judge(t, ifc, f.a, f.b)
			if e[rules.Egress].Enforced || !e[rules.Egress].Bypassed || !strings.Contains(e[rules.Egress].Reason, kind) {
				t.Fatalf("with %s at the tcx head: %+v, want not enforced, bypassed, naming it", kind, e[rules.Egress])
			}
			if r := f.hold(t, ifc); len(r) != 1 || r[0].Direction != rules.Egress {
				t.Fatalf("Hold retook %+v, want the egress hook", r)
			}
			holds(t, "egress, "+kind+" at the head, position retaken", f.a, f.b)
			if e := f.judge(t, ifc, f.a, f.b); !e[rules.Egress].Enforced {
				t.Fatalf("after Hold: %+v", e[rules.Egress])
			}
			if r := f.hold(t, ifc); len(r) != 0 {
				t.Fatalf("second Hold retook %+v: nothing had moved", r)
			}
		})
	}
}

// Cilium's legacy slot, pref 1 handle 1, added after ours: it runs first
// (the most recent handle of a pref does). The position is retaken — tcx
// head where the kernel has tcx, else our filter added again — and the
// other filter stays.
func TestForeignClsBPFAfterOurs(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.apply(t, ifc, egress())
	prog, err := foreign.Load(foreign.OK, foreign.Target{})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if err := foreign.AddClsBPF(f.lab.Node, ifc.Name, "ingress", prog, filepath.Join(f.pins, "ok")); err != nil {
		t.Fatal(err)
	}
	pl := f.placements(t, ifc)
	if pl[rules.Egress].First() || !strings.Contains(pl[rules.Egress].AheadString(), "pref 1 handle 0x1") {
		t.Fatalf("placement %+v: want the foreign filter reported ahead", pl[rules.Egress])
	}
	if e := shaper.Judge(pl, nil, nil); e[rules.Egress].Enforced {
		t.Fatalf("a foreign filter runs first and the rule is reported enforced: %+v", e[rules.Egress])
	}
	f.hold(t, ifc)
	holds(t, "egress, foreign cls_bpf at pref 1 added after ours, position retaken", f.a, f.b)
	if out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", ifc.Name, "ingress"); !strings.Contains(out, "handle 0x1 ") {
		t.Fatalf("the foreign filter is gone:\n%s", out)
	}
}

// The other tool deletes our filter (Cilium clears the legacy slots when
// its tcx attach succeeds): reported, then restored.
func TestForeignDeletesOurFilter(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.apply(t, ifc, egress())
	if err := foreign.DelFilter(f.lab.Node, ifc.Name, "ingress", "1", "0x4b53"); err != nil {
		t.Fatal(err)
	}
	pl := f.placements(t, ifc)
	if e := shaper.Judge(pl, nil, nil); e[rules.Egress].Enforced || !strings.Contains(e[rules.Egress].Reason, "not attached") {
		t.Fatalf("our filter deleted: %+v", e[rules.Egress])
	}
	if r := f.hold(t, ifc); len(r) != 1 {
		t.Fatalf("Hold retook %d hooks, want 1", len(r))
	}
	holds(t, "egress, our filter deleted and restored", f.a, f.b)
}

// BPF host routing: a program on pod a's host veth delivers straight into
// pod b's netns with bpf_redirect_peer, past b's host veth tc egress (where
// b's ingress rule runs). The counters tell (b's eth0 receives, our hook
// sees nothing): reported bypassed; moved to b's own eth0, the rule holds.
func TestPeerRedirectIngress(t *testing.T) {
	f := setup(t)
	ifa, ifb := f.iface(t, f.a), f.iface(t, f.b)
	prog, err := foreign.Load(foreign.Peer, f.target(t, ifb))
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	// Pod a's traffic to b only: a cls_bpf filter would do as well; tcx
	// where there is tcx (as Cilium), after kubeshaper's (it counts a).
	pin := filepath.Join(f.pins, "peer")
	if attach.TCXSupported() {
		var l link.Link
		f.inNode(t, func() (err error) { l, err = foreign.AttachTCX(ifa.Index, true, false, prog); return err })
		defer l.Close()
	} else if err := foreign.AddClsBPF(f.lab.Node, ifa.Name, "ingress", prog, pin); err != nil {
		t.Fatal(err)
	}
	f.apply(t, ifb, ingress())
	e := f.judge(t, ifb, f.a, f.b)
	if e[rules.Ingress].Enforced || !e[rules.Ingress].Bypassed {
		t.Fatalf("peer redirect past the host veth: %+v, want bypassed", e[rules.Ingress])
	}
	ifb.PodSide[rules.Ingress] = true
	f.apply(t, ifb, ingress())
	holds(t, "ingress on a peer-redirect path, pod-side", f.a, f.b)
	e = f.judge(t, ifb, f.a, f.b)
	if !e[rules.Ingress].Enforced || !e[rules.Ingress].PodSide {
		t.Fatalf("pod-side ingress: %+v", e[rules.Ingress])
	}
	f.inNode(t, func() error { return f.sh.Clear(ifb) })
	if out := f.lab.In(f.b.Name, "tc", "filter", "show", "dev", "eth0", "ingress"); strings.Contains(out, "kubeshaper") {
		t.Fatalf("clear left the pod-side filter:\n%s", out)
	}
}

// The admin pinned a program at the tcx head that kubeshaper must not
// displace (YieldTo): kubeshaper runs right after it and, since that
// program ends the hook, reports the rule not enforced with the reason.
func TestYieldToForeignHead(t *testing.T) {
	requireTCX(t)
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.foreignTCX(t, foreign.OK, foreign.Target{}, ifc.Index, true, true)
	f.sh.YieldTo = map[string]bool{foreign.OK: true}
	f.apply(t, ifc, egress())
	pl := f.placements(t, ifc)
	if pl[rules.Egress].Attachment == "" || len(pl[rules.Egress].Yielded) != 1 || !pl[rules.Egress].First() {
		t.Fatalf("placement %+v: want ours right after the yielded program", pl[rules.Egress])
	}
	if e := shaper.Judge(pl, nil, nil); e[rules.Egress].Enforced || !strings.Contains(e[rules.Egress].Reason, foreign.OK) {
		t.Fatalf("static judgement %+v: want not enforced, naming %s", e[rules.Egress], foreign.OK)
	}
	e := f.judge(t, ifc, f.a, f.b)
	if e[rules.Egress].Enforced || !e[rules.Egress].Bypassed || !strings.Contains(e[rules.Egress].Reason, foreign.OK) {
		t.Fatalf("with traffic: %+v, want bypassed, naming %s", e[rules.Egress], foreign.OK)
	}
	if r := f.hold(t, ifc); len(r) != 0 {
		t.Fatalf("Hold displaced a yielded program: %+v", r)
	}
}
