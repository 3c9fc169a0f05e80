package cni

import (
	"fmt"
	"github.com/cilium/ebpf/link"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
	"github.com/kubeshaper/kubeshaper/tests/foreign"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// A custom program (kubeshaper.io/program) follows kubeshaper's program
// onto tcx, right behind it: left a cls_bpf filter (pref 2) it would not
// run at all behind another tool's tcx program that ends the hook (what
// Cilium's cil_from_container does). Also after the other tool takes the
// head again, and without reloading the program.
func TestCustomProgramFollowsOntoTCX(t *testing.T) {
	requireTCX(t)
	f := setup(t)
	f.sh.ProgramDir = netlab.ProgramDir(t)
	ifc := f.iface(t, f.a)
	pol, err := rules.ParseValue("kubeshaper.io/program", "drop_port egress PORT=7101 PROTO=17")
	if err != nil {
		t.Fatal(err)
	}
	f.apply(t, ifc, pol)
	var st [2]shaper.ProgramStatus
	f.inNode(t, func() error { st = f.sh.ApplyPrograms(ifc, pol); return nil })
	if st[rules.Egress].Err != nil || st[rules.Egress].Filter == "" {
		t.Fatalf("custom program: %+v", st[rules.Egress])
	}
	const n = 500
	dropped := func(what string, port, want int) {
		t.Helper()
		r, err := netlab.UDPStream(f.a, f.b, port, n, 200)
		if err != nil {
			t.Fatal(err)
		}
		if r.Received != want {
			t.Fatalf("%s: %d of %d datagrams to port %d arrived, want %d", what, r.Received, n, port, want)
		}
	}
	dropped("cls_bpf at pref 2, alone", 7101, 0)

	// Another tool's tcx program at the tail that ends the hook: the
	// custom filter no longer runs (the kernel's rule), until kubeshaper
	// takes the head and the program follows.
	f.foreignTCX(t, foreign.OK, foreign.Target{}, ifc.Index, true, false)
	dropped("behind a foreign tcx program, before kubeshaper acts", 7101, n)
	f.hold(t, ifc)
	chain := f.chain(t, ifc)
	if len(chain) != 3 || !chain[0].Ours || chain[0].Name == "drop_port" || !chain[1].TCX || chain[1].Name != "drop_port" || chain[2].Name != foreign.OK {
		t.Fatalf("chain %v: want ours, the custom program, the other tool's, all tcx", chain)
	}
	progID := chain[1].ProgID
	var where [2]string
	f.inNode(t, func() error { where = f.sh.ProgramAttachments(ifc); return nil })
	if !strings.Contains(where[rules.Egress], "tcx link") || !strings.Contains(where[rules.Egress], "right behind ours") {
		t.Fatalf("status names the program's place as %q", where[rules.Egress])
	}
	dropped("custom program on tcx behind ours", 7101, 0)
	dropped("custom program on tcx, another port", 7102, n)
	intact := func() (ok bool) {
		f.inNode(t, func() error {
			ok = f.sh.ProgramsIntact(ifc, [2]string{rules.Egress: st[rules.Egress].Filter})
			return nil
		})
		return ok
	}
	if !intact() {
		t.Fatal("ProgramsIntact: false for the program on tcx")
	}
	f.inNode(t, func() error { st = f.sh.ApplyPrograms(ifc, pol); return nil })
	if c := f.chain(t, ifc); len(c) != 3 || c[1].ProgID != progID || st[rules.Egress].Err != nil {
		t.Fatalf("applying again changed the program: %v (was prog %d), %+v", c, progID, st[rules.Egress])
	}

	// The other tool takes the head: both of ours go back in front of it.
	f.foreignTCX(t, foreign.Redirect, f.target(t, f.iface(t, f.b)), ifc.Index, true, true)
	if pl := f.placements(t, ifc); pl[rules.Egress].First() {
		t.Fatalf("placement %+v with another tool's program at the head", pl[rules.Egress])
	}
	f.hold(t, ifc)
	chain = f.chain(t, ifc)
	if len(chain) != 4 || !chain[0].Ours || chain[1].ProgID != progID {
		t.Fatalf("after the head was taken and retaken: %v, want ours then the custom program (prog %d)", chain, progID)
	}
	dropped("custom program after the head was retaken", 7101, 0)

	// Clear leaves the other tool's programs only.
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
	for _, e := range f.chain(t, ifc) {
		if e.Ours || e.Name == "drop_port" {
			t.Fatalf("after clear: %v", f.chain(t, ifc))
		}
	}
}

// chain lists the host veth's tc ingress hook (pod egress), tcx first.
func (f *fixture) chain(t *testing.T, ifc shaper.Interface) []attach.Entry {
	t.Helper()
	var c []attach.Entry
	var links []uint32
	for _, pin := range []string{"", "-program"} {
		l, ok, err := attach.PinnedTCX(filepath.Join(f.dp.PinDir(), "tcx", fmt.Sprintf("%d-%s%s", ifc.Index, attach.HookIngress, pin)))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			links = append(links, l.LinkID)
		}
	}
	f.inNode(t, func() (err error) { c, err = attach.Chain(ifc.Index, attach.HookIngress, links...); return err })
	return c
}

// A custom program goes pod-side with its direction: on a peer-redirect
// path (BPF host routing) the host veth's tc egress never sees what pod b
// receives, so an ingress program left there would not run at all.
func TestCustomProgramFollowsPodSide(t *testing.T) {
	f := setup(t)
	f.sh.ProgramDir = netlab.ProgramDir(t)
	ifa, ifb := f.iface(t, f.a), f.iface(t, f.b)
	prog, err := foreign.Load(foreign.Peer, f.target(t, ifb))
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if attach.TCXSupported() {
		var l link.Link
		f.inNode(t, func() (err error) { l, err = foreign.AttachTCX(ifa.Index, true, false, prog); return err })
		defer l.Close()
	} else if err := foreign.AddClsBPF(f.lab.Node, ifa.Name, "ingress", prog, filepath.Join(f.pins, "peer")); err != nil {
		t.Fatal(err)
	}
	pol, err := rules.ParseValue("kubeshaper.io/program", "drop_port ingress PORT=7201 PROTO=17")
	if err != nil {
		t.Fatal(err)
	}
	applyAll := func() {
		t.Helper()
		f.apply(t, ifb, pol)
		var st [2]shaper.ProgramStatus
		f.inNode(t, func() error { st = f.sh.ApplyPrograms(ifb, pol); return nil })
		if st[rules.Ingress].Err != nil || st[rules.Ingress].Filter == "" {
			t.Fatalf("custom program: %+v", st[rules.Ingress])
		}
	}
	arrived := func(port int) int {
		t.Helper()
		r, err := netlab.UDPStream(f.a, f.b, port, 500, 200)
		if err != nil {
			t.Fatal(err)
		}
		return r.Received
	}
	applyAll()
	if n := arrived(7201); n != 500 {
		t.Fatalf("host-side program on a peer-redirect path: %d of 500 arrived, want all (the path skips it)", n)
	}
	ifb.PodSide[rules.Ingress] = true
	applyAll()
	if n := arrived(7201); n != 0 {
		t.Fatalf("pod-side program: %d of 500 datagrams to the dropped port arrived", n)
	}
	if n := arrived(7202); n != 500 {
		t.Fatalf("pod-side program: %d of 500 datagrams to another port arrived", n)
	}
	var where [2]string
	intact := false
	f.inNode(t, func() error {
		where = f.sh.ProgramAttachments(ifb)
		var st [2]shaper.ProgramStatus
		st = f.sh.ApplyPrograms(ifb, pol) // again: nothing to do
		intact = f.sh.ProgramsIntact(ifb, [2]string{rules.Ingress: st[rules.Ingress].Filter})
		return nil
	})
	if !strings.HasPrefix(where[rules.Ingress], "pod ingress: cls_bpf") || !intact {
		t.Fatalf("program placement %q, intact %v", where[rules.Ingress], intact)
	}
	if out := f.lab.In(f.lab.Node, "tc", "filter", "show", "dev", ifb.Name, "egress"); strings.Contains(out, "drop_port") {
		t.Fatalf("the host-side copy stayed:\n%s", out)
	}
	f.inNode(t, func() error { return f.sh.Clear(ifb) })
	if out := f.lab.In(f.b.Name, "tc", "filter", "show", "dev", "eth0", "ingress"); strings.Contains(out, "kubeshaper") {
		t.Fatalf("clear left pod-side filters:\n%s", out)
	}
}
