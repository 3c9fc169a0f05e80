package sockpace

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// pinDir is a fresh pin directory (netlab.PinDir), its pins removed
// first (the link pin detaches the program).
func pinDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	dir := netlab.PinDir(t, "kstest-ksp")
	t.Cleanup(func() { Remove(dir) })
	return dir
}

// open is Open and Attach, failing the test on error (skipping it on
// kernels without socket pacing).
func open(t *testing.T, dir string, o Options) *Pacer {
	t.Helper()
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	p, err := Open(dir, o)
	if err != nil {
		if old, v := olderThan(5, 15); old {
			t.Skipf("kernel %s: sock_ops lacks bpf_get_netns_cookie before 5.15 (%v)", v, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Attach(); err != nil {
		t.Fatal(err)
	}
	return p
}

// oldAgent sets dir up as the agent before issue 12 left it: the three
// hash maps preallocated at 16,384 entries (flags 0, as bpf/sockpace.c
// declared them), pinned with the counters, ksp_socks not pinned, the
// program attached through a pinned link. It returns the program's ID and
// the maps' IDs.
func oldAgent(t *testing.T, dir string, entries uint32, flags uint32) (ebpf.ProgramID, []ebpf.MapID) {
	t.Helper()
	spec, err := loadSockpace()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[sockpaceMapKspSocks].Pinning = ebpf.PinNone // not pinned then
	use := map[string]*ebpf.Map{}
	var ids []ebpf.MapID
	for _, name := range []string{sockpaceMapKspRules, sockpaceMapKspNodeNetns, sockpaceMapKspGroups, sockpaceMapKspStats} {
		ms := spec.Maps[name]
		if sized(name) {
			ms.MaxEntries, ms.Flags = entries, flags
		}
		s := ms.Copy()
		s.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(s)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		info, _ := m.Info()
		id, _ := info.ID()
		ids = append(ids, id)
		use[name] = m
	}
	var objs sockpaceObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: use}); err != nil {
		if old, v := olderThan(5, 15); old {
			t.Skipf("kernel %s: %v", v, err)
		}
		t.Fatal(err)
	}
	defer objs.Close()
	cg, err := Cgroup2()
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupSockOps, Program: objs.KsSockpace})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Pin(filepath.Join(dir, LinkPin)); err != nil {
		t.Fatal(err)
	}
	info, _ := objs.KsSockpace.Info()
	id, _ := info.ID()
	return id, ids
}

// pinnedMap describes the map pinned as name: entries and flags.
func pinnedMap(t *testing.T, dir, name string) (uint32, uint32) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
	if err != nil {
		t.Fatalf("pinned map %s: %v", name, err)
	}
	defer m.Close()
	return m.MaxEntries(), m.Flags()
}

// linkProgram is the program the pinned link runs.
func linkProgram(t *testing.T, dir string) ebpf.ProgramID {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(dir, LinkPin), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.Program
}

func progID(t *testing.T, p *Pacer) ebpf.ProgramID {
	t.Helper()
	info, err := p.objs.KsSockpace.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// pins lists dir: the pins left, to check that nothing leaked.
func pins(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func wantPins(t *testing.T, dir string) {
	t.Helper()
	want := append([]string{LinkPin}, mapPins...)
	slices.Sort(want)
	if got := pins(t, dir); !slices.Equal(got, want) {
		t.Errorf("pins %v, want %v", got, want)
	}
}

// TestMapsSizedFromPods: the hash maps are sized from the node's pod
// count, not preallocated, and pinned as such. Before issue 12 they were
// 16,384 preallocated entries whatever the node.
func TestMapsSizedFromPods(t *testing.T) {
	dir := pinDir(t)
	open(t, dir, Options{Pods: 250})
	want := map[string]uint32{sockpaceMapKspRules: 1000, sockpaceMapKspNodeNetns: 501, sockpaceMapKspGroups: 2000}
	for name, n := range want {
		got, flags := pinnedMap(t, dir, name)
		if got != n || flags&bpfFNoPrealloc == 0 {
			t.Errorf("%s: %d entries, flags %#x; want %d, BPF_F_NO_PREALLOC", name, got, flags, n)
		}
	}
	wantPins(t, dir)
	if s := SizesForPods(0); s != SizesForPods(DefaultPods) {
		t.Errorf("SizesForPods(0) = %+v, want the default's %+v", s, SizesForPods(DefaultPods))
	}
	if s := SizesForPods(1); s.Rules != minEntries || s.Netns != minEntries || s.Groups != minEntries {
		t.Errorf("SizesForPods(1) = %+v, want %d each", s, minEntries)
	}
}

// TestOldPinnedMapsReplaced: an agent before issue 12 left 16,384-entry
// preallocated maps and its program on the pinned link, pacing pod A. A
// new agent replaces the maps by sized ones with their entries, switches
// the same link to its program, leaves no other pin, and the old maps are
// freed; pod A is still paced, with no restart of anything and no
// re-applied rule.
func TestOldPinnedMapsReplaced(t *testing.T) {
	dir := pinDir(t)
	oldProg, oldMaps := oldAgent(t, dir, oldEntries, 0)
	_, a, b := lab2(t)
	ipA := netip.MustParseAddr(a.IP.String())
	// The old agent's entries, written through the pins as the CLI does.
	rules, err := ebpf.LoadPinnedMap(filepath.Join(dir, rulesPin), nil)
	if err != nil {
		t.Fatal(err)
	}
	const wire = 10e6
	err = rules.Put(keyOf(ipA), sockpaceKspRule{Rate: [2]uint64{wire / 8, 0}, Netns: cookieOf(t, a), Ifindex: 101})
	rules.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := SetUnpaced(dir, 102, cookieOf(t, b)); err != nil {
		t.Fatal(err)
	}

	// The old agent paces pod A (and counts its flow in ksp_groups).
	payload := wire * 1448 / 1514
	paced := func(r float64) bool { return r >= payload*0.8 && r <= payload*1.05 }
	if r := measure(t, "pod A under the old agent", a, b, time.Second, paced); !paced(r) {
		t.Fatalf("pod A under the old agent: %.2f Mbit/s, want %.2f -20 %%/+5 %%", r/1e6, payload/1e6)
	}

	var logged []string
	p := open(t, dir, Options{Pods: 8, Logf: func(f string, a ...any) {
		logged = append(logged, f)
		t.Logf(f, a...)
	}})
	for _, name := range []string{sockpaceMapKspRules, sockpaceMapKspNodeNetns, sockpaceMapKspGroups} {
		if n, flags := pinnedMap(t, dir, name); n != minEntries || flags&bpfFNoPrealloc == 0 {
			t.Errorf("%s after the new agent: %d entries, flags %#x; want %d, BPF_F_NO_PREALLOC", name, n, flags, minEntries)
		}
	}
	if got, want := linkProgram(t, dir), progID(t, p); got != want || got == oldProg {
		t.Errorf("the pinned link runs program %d, want the new agent's %d (the old one was %d)", got, want, oldProg)
	}
	wantPins(t, dir)
	st, err := Read(dir)
	if err != nil || len(st.Of(101)) != 1 || st.Of(101)[0].Rule.EgressBitsPerSec != wire {
		t.Fatalf("pod A's rule after the maps were replaced: %+v, %v", st.Of(101), err)
	}
	var ifx uint32
	if err := p.objs.KspNodeNetns.Lookup(cookieOf(t, b), &ifx); err != nil || ifx != 102 {
		t.Errorf("pod B's netns record after the maps were replaced: ifindex %d, %v", ifx, err)
	}
	if len(logged) < 3 {
		t.Errorf("logged %d lines for 3 resized maps", len(logged))
	}

	if n, err := count(p.objs.KspGroups); err != nil || n == 0 {
		t.Errorf("ksp_groups after the maps were replaced: %d entries, %v; want pod A's flow accounting carried over", n, err)
	}
	if r := measure(t, "pod A after the maps were replaced", a, b, 2*time.Second, paced); !paced(r) {
		t.Errorf("pod A after the maps were replaced: %.2f Mbit/s, want %.2f -20 %%/+5 %%", r/1e6, payload/1e6)
	}
	// Nothing holds the old maps any more: the kernel frees them (from a
	// workqueue, shortly after the old program goes).
	for _, id := range oldMaps[:3] {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			m, err := ebpf.NewMapFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				m.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("old map %d still exists 5 s after it was replaced (%v)", id, err)
				break
			}
		}
	}
}

// TestTooSmallMapsGrown: maps sized for a small node, full of entries,
// are grown when the node's pod count grows, every entry carried over;
// a smaller size later keeps them (maps never shrink: the CLI and the
// agent must not resize each other's maps back and forth).
func TestTooSmallMapsGrown(t *testing.T) {
	dir := pinDir(t)
	p := open(t, dir, Options{Pods: 16})
	small := SizesForPods(16).Rules
	for i := 0; i < small; i++ {
		a := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
		if err := p.Set(1000+i, []netip.Addr{a}, 1, Rule{EgressBitsPerSec: 8e6}); err != nil {
			t.Fatalf("rule %d of %d: %v", i, small, err)
		}
	}
	// Full: one more is refused (what a node that outgrew its maps sees).
	if err := p.Set(5000, []netip.Addr{netip.MustParseAddr("10.98.0.1")}, 1, Rule{EgressBitsPerSec: 8e6}); err == nil {
		t.Fatalf("a %d-entry ksp_rules took entry %d", small, small+1)
	}
	p.Close()

	p = open(t, dir, Options{Pods: 100})
	if n, _ := pinnedMap(t, dir, sockpaceMapKspRules); n != uint32(SizesForPods(100).Rules) {
		t.Errorf("ksp_rules after the node grew to 100 pods: %d entries, want %d", n, SizesForPods(100).Rules)
	}
	if err := p.Set(5000, []netip.Addr{netip.MustParseAddr("10.98.0.1")}, 1, Rule{EgressBitsPerSec: 8e6}); err != nil {
		t.Errorf("a rule beyond the old size: %v", err)
	}
	st, err := Read(dir)
	if err != nil || len(st.Entries) != small+1 {
		t.Errorf("%d rules after growing (want the %d carried over and 1 new), %v", len(st.Entries), small, err)
	}
	wantPins(t, dir)
	p.Close()

	open(t, dir, Options{Pods: 16})
	if n, _ := pinnedMap(t, dir, sockpaceMapKspRules); n != uint32(SizesForPods(100).Rules) {
		t.Errorf("ksp_rules after a caller asked for 16 pods: %d entries, want the %d kept", n, SizesForPods(100).Rules)
	}
}

// TestIncompatiblePinRecreated: a pin of another layout (a future or
// foreign build) is replaced by an empty map of this build's, logged.
func TestIncompatiblePinRecreated(t *testing.T) {
	dir := pinDir(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, sockpaceMapKspGroups)); err != nil {
		t.Fatal(err)
	}
	var logged string
	open(t, dir, Options{Pods: 8, Logf: func(f string, a ...any) { logged += fmt.Sprintf(f, a...) }})
	pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, sockpaceMapKspGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	if pm.KeySize() == 4 || pm.MaxEntries() != minEntries {
		t.Errorf("ksp_groups of another layout kept: key %d, %d entries", pm.KeySize(), pm.MaxEntries())
	}
	if !strings.Contains(logged, "another layout") {
		t.Errorf("not logged: %q", logged)
	}
}

// TestReplaceFailsCleanly: when a new map cannot be pinned in place of an
// old one, Attach fails naming it, and the node keeps what it had: the
// pinned link on the old program, the old maps under every pin.
func TestReplaceFailsCleanly(t *testing.T) {
	dir := pinDir(t)
	oldProg, _ := oldAgent(t, dir, oldEntries, 0)
	// A directory where ksp_groups' replacement is pinned first: its
	// pin fails (ksp_rules, before it, is already replaced then).
	if err := os.MkdirAll(filepath.Join(dir, "ksp_groups_replacing", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := Open(dir, Options{Pods: 8, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Attach()
	if err == nil || !strings.Contains(err.Error(), "ksp_groups") {
		t.Fatalf("Attach: %v, want an error naming ksp_groups", err)
	}
	t.Logf("Attach: %v", err)
	if got := linkProgram(t, dir); got != oldProg {
		t.Errorf("the pinned link runs program %d after the failed replacement, want the old %d", got, oldProg)
	}
	for _, name := range []string{sockpaceMapKspRules, sockpaceMapKspNodeNetns, sockpaceMapKspGroups} {
		if n, flags := pinnedMap(t, dir, name); n != 16384 || flags != 0 {
			t.Errorf("%s after the failed replacement: %d entries, flags %#x; want the old map (16384, 0)", name, n, flags)
		}
	}
	os.RemoveAll(filepath.Join(dir, "ksp_groups_replacing"))
	for _, n := range pins(t, dir) {
		if strings.HasSuffix(n, "_replacing") || n == sockpaceMapKspSocks {
			t.Errorf("pin %s left by the failed replacement", n)
		}
	}
}

// lab2 is a node netns with two pods, named with this test file's prefix.
func lab2(t *testing.T) (*netlab.Lab, *netlab.Pod, *netlab.Pod) {
	t.Helper()
	lab := netlab.New(t, "h12m")
	return lab, lab.AddPod("a"), lab.AddPod("b")
}
