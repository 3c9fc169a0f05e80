package attach

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAttachIsVisibleToTc(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	prog, id := trivialProg(t, "ks_trivial")

	ns.do(t, func() error {
		if err := AttachFilter(va, HookIngress, prog.FD(), "kubeshaper_ingress"); err != nil {
			return err
		}
		return AttachFilter(va, HookEgress, prog.FD(), "kubeshaper_egress")
	})

	for _, hook := range Hooks {
		lines := ours(ns.filterLines(t, "ksa0", hook))
		if len(lines) != 1 {
			t.Fatalf("tc filter show dev ksa0 %s: %d kubeshaper filters, want 1: %q", hook, len(lines), lines)
		}
		line := lines[0]
		t.Logf("tc filter show dev ksa0 %s: %s", hook, line)
		for _, want := range []string{
			"filter protocol all pref 1 bpf chain 0 handle 0x4b53 kubeshaper_" + hook.String() + " ",
			"direct-action",
			fmt.Sprintf(" id %d name ks_trivial ", id),
		} {
			if !strings.Contains(line, want) {
				t.Errorf("%s hook line %q lacks %q", hook, line, want)
			}
		}
	}

	var got []Filter
	ns.do(t, func() (err error) { got, err = ListFilters(va); return })
	want := []Filter{
		{Ifindex: va, Hook: HookIngress, Name: "kubeshaper_ingress", ProgID: id, Priority: 1, Handle: 0x4b53, DirectAction: true},
		{Ifindex: va, Hook: HookEgress, Name: "kubeshaper_egress", ProgID: id, Priority: 1, Handle: 0x4b53, DirectAction: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListFilters = %+v, want %+v", got, want)
	}
}

func TestReattachReplaces(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	first, _ := trivialProg(t, "ks_first")
	second, secondID := trivialProg(t, "ks_second")

	ns.do(t, func() error {
		for _, p := range []int{first.FD(), first.FD(), second.FD()} {
			if err := AttachFilter(va, HookIngress, p, "kubeshaper_ingress"); err != nil {
				return err
			}
		}
		return nil
	})
	lines := ns.filterLines(t, "ksa0", HookIngress)
	if len(lines) != 1 || !strings.Contains(lines[0], "name ks_second ") {
		t.Fatalf("after three attaches: %q, want one filter running ks_second", lines)
	}
	var got []Filter
	ns.do(t, func() (err error) { got, err = ListFilters(va); return })
	if len(got) != 1 || got[0].ProgID != secondID {
		t.Errorf("ListFilters = %+v, want one filter with prog id %d", got, secondID)
	}
}

// addForeignFilters installs, before kubeshaper does anything, what other
// tools might have: a clsact, a u32 filter at tc's default priority 49152,
// and an (unnamed, classic) bpf filter at prio 1 handle 1 — Cilium's
// default slot, which shares the classifier instance with ours.
func addForeignFilters(t *testing.T, ns testNetns, dev string) {
	t.Helper()
	ns.in(t, "tc", "qdisc", "add", "dev", dev, "clsact")
	ns.in(t, "tc", "filter", "add", "dev", dev, "ingress", "prio", "49152", "u32", "match", "u32", "0", "0", "classid", "1:1")
	ns.in(t, "tc", "filter", "add", "dev", dev, "ingress", "prio", "1", "handle", "0x1", "bpf", "bytecode", "1,6 0 0 4294967295,", "classid", "1:3")
	ns.in(t, "tc", "filter", "add", "dev", dev, "egress", "prio", "49152", "u32", "match", "u32", "0", "0", "classid", "1:2")
}

func TestCoexistsWithForeignFilters(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	prog, _ := trivialProg(t, "ks_trivial")
	addForeignFilters(t, ns, "ksa0")
	foreignIn := ns.filterLines(t, "ksa0", HookIngress)
	foreignEg := ns.filterLines(t, "ksa0", HookEgress)

	ns.do(t, func() error {
		if err := EnsureClsact(va); err != nil {
			return err
		}
		if err := AttachFilter(va, HookIngress, prog.FD(), "kubeshaper_ingress"); err != nil {
			return err
		}
		return AttachFilter(va, HookEgress, prog.FD(), "kubeshaper_egress")
	})
	withOurs := ns.filterLines(t, "ksa0", HookIngress)
	if len(withOurs) != len(foreignIn)+1 || len(ours(withOurs)) != 1 {
		t.Fatalf("after attach: %q; want the %d foreign filters plus ours", withOurs, len(foreignIn))
	}
	var listed []Filter
	ns.do(t, func() (err error) { listed, err = ListFilters(va); return })
	if len(listed) != 2 {
		t.Errorf("ListFilters = %+v, want only our 2 filters", listed)
	}

	ns.do(t, func() error {
		for _, hook := range Hooks {
			// twice: the second finds nothing to do
			for i := 0; i < 2; i++ {
				if err := DetachFilter(va, hook); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if got := ns.filterLines(t, "ksa0", HookIngress); !reflect.DeepEqual(got, foreignIn) {
		t.Errorf("ingress after detach:\n%q\nwant the foreign filters untouched:\n%q", got, foreignIn)
	}
	if got := ns.filterLines(t, "ksa0", HookEgress); !reflect.DeepEqual(got, foreignEg) {
		t.Errorf("egress after detach:\n%q\nwant the foreign filters untouched:\n%q", got, foreignEg)
	}
	if !ns.hasClsact(t, "ksa0") {
		t.Error("clsact was deleted while it still held foreign filters")
	}
}

func TestForeignFilterInOurSlot(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	prog, _ := trivialProg(t, "ks_trivial")
	ns.in(t, "tc", "qdisc", "add", "dev", "ksa0", "clsact")
	ns.in(t, "tc", "filter", "add", "dev", "ksa0", "ingress", "prio", "1", "handle", "0x4b53", "bpf", "bytecode", "1,6 0 0 4294967295,", "classid", "1:1")
	before := ns.filterLines(t, "ksa0", HookIngress)

	var attachErr error
	ns.do(t, func() error {
		attachErr = AttachFilter(va, HookIngress, prog.FD(), "kubeshaper_ingress")
		return DetachFilter(va, HookIngress)
	})
	if !errors.Is(attachErr, ErrForeignFilter) {
		t.Errorf("AttachFilter over a foreign filter in our slot: %v, want ErrForeignFilter", attachErr)
	}
	t.Log(attachErr)
	if got := ns.filterLines(t, "ksa0", HookIngress); !reflect.DeepEqual(got, before) {
		t.Errorf("foreign filter changed: %q, was %q", got, before)
	}
}

func TestDetachRemovesClsactOnlyWhenEmpty(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	prog, _ := trivialProg(t, "ks_trivial")

	ns.do(t, func() error {
		if err := AttachFilter(va, HookIngress, prog.FD(), "kubeshaper_ingress"); err != nil {
			return err
		}
		if err := AttachFilter(va, HookEgress, prog.FD(), "kubeshaper_egress"); err != nil {
			return err
		}
		return DetachFilter(va, HookIngress)
	})
	if !ns.hasClsact(t, "ksa0") {
		t.Fatal("clsact deleted while our egress filter was still on it")
	}
	ns.do(t, func() error { return DetachFilter(va, HookEgress) })
	if ns.hasClsact(t, "ksa0") {
		t.Error("clsact left behind with no filter on either hook")
	}
	// A vanished interface (the pod is gone) has nothing to detach.
	ns.do(t, func() error { return DetachFilter(9999, HookIngress) })

	// Attaching again to the emptied slot (the kernel keeps a noop qdisc
	// there, which it answers a get for with nothing but the ack) works at
	// once: no waiting for a reply that never comes.
	start := time.Now()
	ns.do(t, func() error { return AttachFilter(va, HookIngress, prog.FD(), "kubeshaper_ingress") })
	if took := time.Since(start); took > time.Second {
		t.Errorf("re-attaching after the clsact was removed took %v", took)
	}
	if !ns.hasClsact(t, "ksa0") || len(ns.filterLines(t, "ksa0", HookIngress)) != 1 {
		t.Error("no clsact with our filter after re-attaching")
	}
}

func TestAttachErrorsNameTheInterface(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	prog, _ := trivialProg(t, "ks_trivial")
	var badName, noDev error
	ns.do(t, func() error {
		badName = AttachFilter(va, HookEgress, prog.FD(), "other_tool")
		noDev = AttachFilter(9999, HookIngress, prog.FD(), "kubeshaper_ingress")
		return nil
	})
	if badName == nil || !strings.Contains(badName.Error(), "ksa0 (ifindex") || !strings.Contains(badName.Error(), "tc egress") {
		t.Errorf("bad name: %v; want an error naming ksa0 and tc egress", badName)
	}
	if noDev == nil || !strings.Contains(noDev.Error(), "ifindex 9999") {
		t.Errorf("missing interface: %v; want an error naming ifindex 9999", noDev)
	}
	t.Logf("%v\n%v", badName, noDev)
}

func TestListAllOursFindsLeftovers(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	a0, b0 := ns.veth(t, "ksa0", "ksb0")
	a1, _ := ns.veth(t, "ksa1", "ksb1")
	a2, _ := ns.veth(t, "ksa2", "ksb2")
	prog, id := trivialProg(t, "ks_trivial")
	addForeignFilters(t, ns, "ksa2") // a clsact with only foreign filters

	// An agent attaches, then "crashes": nothing is detached.
	ns.do(t, func() error {
		for _, a := range []struct {
			ifindex int
			hook    Hook
		}{{a0, HookIngress}, {a0, HookEgress}, {b0, HookEgress}, {a1, HookIngress}} {
			if err := AttachFilter(a.ifindex, a.hook, prog.FD(), "kubeshaper_"+a.hook.String()); err != nil {
				return err
			}
		}
		return nil
	})

	var found map[int][]Filter
	ns.do(t, func() (err error) { found, err = ListAllOurs(); return })
	wantHooks := map[int][]Hook{a0: {HookIngress, HookEgress}, b0: {HookEgress}, a1: {HookIngress}}
	if len(found) != len(wantHooks) {
		t.Errorf("ListAllOurs found %d interfaces, want %d: %+v", len(found), len(wantHooks), found)
	}
	for ifindex, hooks := range wantHooks {
		var got []Hook
		for _, f := range found[ifindex] {
			got = append(got, f.Hook)
			if f.ProgID != id || f.Name != "kubeshaper_"+f.Hook.String() {
				t.Errorf("leftover %+v: want prog %d named after its hook", f, id)
			}
		}
		if !reflect.DeepEqual(got, hooks) {
			t.Errorf("ifindex %d: hooks %v, want %v", ifindex, got, hooks)
		}
	}
	if _, ok := found[a2]; ok {
		t.Errorf("ListAllOurs reported the foreign-only ifindex %d", a2)
	}

	// The restarted agent cleans up what it found.
	ns.do(t, func() error {
		for ifindex, filters := range found {
			for _, f := range filters {
				if err := DetachFilter(ifindex, f.Hook); err != nil {
					return err
				}
			}
		}
		found, _ = ListAllOurs()
		return nil
	})
	if len(found) != 0 {
		t.Errorf("after cleanup ListAllOurs = %+v, want none", found)
	}
	for _, dev := range []string{"ksa0", "ksb0", "ksa1"} {
		if ns.hasClsact(t, dev) {
			t.Errorf("%s kept an empty clsact", dev)
		}
	}
	if !ns.hasClsact(t, "ksa2") {
		t.Error("ksa2's foreign clsact was removed")
	}
}
