// Package sockpace paces the TCP sockets of pods with a bandwidth rule
// (issue 13): a sock_ops program (bpf/sockpace.c) attached at the cgroup v2
// root sets SO_MAX_PACING_RATE on them, so that TCP sends at the rule's
// rate by itself instead of being held there by drops. Rules are map
// entries keyed by pod address; the program, its link and its maps are
// pinned beside the datapath's (one pin directory per node netns), so they
// survive agent restarts until Remove. The maps are sized for the node's
// pods and replaced, entries kept, when the node outgrows them (maps.go).
//
// It knows nothing of interfaces beyond the ifindex an entry belongs to
// (so that clearing an interface clears its pod's entries); pkg/shaper
// decides which rules are paced.
package sockpace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Pins under the datapath's pin directory.
const (
	LinkPin  = "ksp_link"
	rulesPin = "ksp_rules"
)

// mapPins are the maps pinned beside the link: the rules and netns records
// user space writes, the program's flow accounting, its counters, and its
// per-socket state (pinned so that a new agent's program, swapped in on
// the same link, goes on with the sockets paced before it).
var mapPins = []string{sockpaceMapKspRules, sockpaceMapKspGroups, sockpaceMapKspStats, sockpaceMapKspNodeNetns, sockpaceMapKspSocks}

// Pacer is the loaded program with its maps, attached or not.
type Pacer struct {
	objs   sockpaceObjects
	pinDir string
	opts   Options
	repl   []*replacement // maps to pin in place of the pinned ones (Attach)
	Cgroup string         // where the program is attached ("" until Attach)
}

// Open loads the program with its maps sized by o (see Options): those
// pinned in pinDir when they fit, else new ones that Attach pins in their
// place once the program is attached. Until Attach, nothing pinned changes.
func Open(pinDir string, o Options) (*Pacer, error) {
	spec, err := loadSockpace()
	if err != nil {
		return nil, fmt.Errorf("reading the socket-pacing BPF object: %w", err)
	}
	sizeSpec(spec, SizesForPods(o.Pods))
	use, repl, err := prepare(pinDir, spec, o)
	if err != nil {
		return nil, err
	}
	p := &Pacer{pinDir: pinDir, opts: o, repl: repl}
	// The loader takes clones of every map: ours are released here.
	defer func() {
		for _, m := range use {
			m.Close()
		}
	}()
	if err := loadSockpaceSpec(spec, &p.objs, use); err != nil {
		p.dropReplaced()
		return nil, err
	}
	return p, nil
}

func loadSockpaceSpec(spec *ebpf.CollectionSpec, objs *sockpaceObjects, use map[string]*ebpf.Map) error {
	if err := spec.LoadAndAssign(objs, &ebpf.CollectionOptions{MapReplacements: use}); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("the kernel's verifier rejected the socket-pacing program: %+v", ve)
		}
		return fmt.Errorf("loading the socket-pacing program (needs sock_ops with bpf_setsockopt, sk_storage and BTF, Linux >= 5.10): %w", err)
	}
	return nil
}

// Close releases this process's handles; the pinned link keeps the program
// attached.
func (p *Pacer) Close() error {
	p.dropReplaced()
	return p.objs.Close()
}

// Attach makes sure the program runs for every socket of the node, with
// the maps Open chose: an existing pinned link (an earlier agent's) is
// switched to this build's program in place — sockets paced before stay
// paced, there is no moment without the program — and only then are maps
// that replace pinned ones pinned in their place (their entries copied
// just before the switch, so user space, which finds the maps by pin, and
// the program use the same maps); if the pins cannot be changed, the link
// is switched back. Without a pinned link, a new link is made at the
// cgroup v2 root (with bpf_link, cgroup programs are always
// BPF_F_ALLOW_MULTI: other tools' sock_ops keep running) and pinned.
func (p *Pacer) Attach() error {
	if err := p.carryOver(); err != nil {
		return err
	}
	pin := filepath.Join(p.pinDir, LinkPin)
	l, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		defer l.Close()
		prev := previousProgram(l)
		if prev != nil {
			defer prev.Close()
		}
		if err := l.Update(p.objs.KsSockpace); err != nil {
			return fmt.Errorf("updating the socket-pacing program of %s: %w", pin, err)
		}
		if err := p.commitPins(); err != nil {
			if prev != nil {
				if rerr := l.Update(prev); rerr != nil {
					err = errors.Join(err, fmt.Errorf("switching %s back to the previous program: %w (remove it and restart the agent)", pin, rerr))
				}
			}
			return err
		}
		p.Cgroup = "(pinned)"
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("opening the pinned socket-pacing link %s: %w (remove it and restart the agent)", pin, err)
	}
	// No program runs with the pinned maps: they can change first.
	if err := p.commitPins(); err != nil {
		return err
	}
	cg, err := Cgroup2()
	if err != nil {
		return err
	}
	nl, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupSockOps, Program: p.objs.KsSockpace})
	if err != nil {
		return fmt.Errorf("attaching the socket-pacing program at cgroup %s: %w", cg, err)
	}
	defer nl.Close()
	if err := nl.Pin(pin); err != nil {
		return fmt.Errorf("pinning the socket-pacing link at %s (needs bpf_link for cgroups, Linux >= 5.7): %w", pin, err)
	}
	p.Cgroup = cg
	return nil
}

// previousProgram is the program l runs now (to switch back to), nil if
// it cannot be read.
func previousProgram(l link.Link) *ebpf.Program {
	info, err := l.Info()
	if err != nil {
		return nil
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return nil
	}
	return prog
}

// Entries is the max entries of the loaded maps, by name (for tests and
// logs).
func (p *Pacer) Entries() map[string]int {
	out := map[string]int{}
	for name, m := range p.maps() {
		out[name] = int(m.MaxEntries())
	}
	return out
}

// Rule is what one pod address is paced at: wire (L2) bits per second per
// direction, 0 for none. Egress paces the pod's own sockets; ingress paces
// the sockets of same-node senders to the pod.
type Rule struct {
	EgressBitsPerSec, IngressBitsPerSec uint64
}

func keyOf(a netip.Addr) sockpaceKspKey {
	b := a.As16() // IPv4 comes out v4-mapped, as the program builds it
	var k sockpaceKspKey
	for i := range k.Addr {
		k.Addr[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return k
}

func addrOf(k sockpaceKspKey) netip.Addr {
	var b [16]byte
	for i, v := range k.Addr {
		binary.NativeEndian.PutUint32(b[i*4:], v)
	}
	return netip.AddrFrom16(b).Unmap()
}

// Set makes ifindex's pod addresses carry r, and drops entries of ifindex
// for other addresses (a pod whose IP changed). A zero rule clears. netns
// is the pod's netns cookie (NetnsCookie): its egress rule paces sockets
// of that netns only.
func (p *Pacer) Set(ifindex int, addrs []netip.Addr, netns uint64, r Rule) error {
	if r == (Rule{}) {
		addrs = nil
	}
	if err := clearIndex(p.objs.KspRules, p.objs.KspGroups, nil, ifindex, addrs); err != nil {
		return err
	}
	v := sockpaceKspRule{Rate: [2]uint64{r.EgressBitsPerSec / 8, r.IngressBitsPerSec / 8}, Netns: netns, Ifindex: uint32(ifindex)}
	for _, a := range addrs {
		if err := p.objs.KspRules.Put(keyOf(a), v); err != nil {
			return fmt.Errorf("socket pacing for %s: %w", a, err)
		}
	}
	return nil
}

// AddNetns records a network namespace of this node (a pod's, under the
// host veth ifindex, or the node's own, ifindex 0): senders there to a pod
// with an ingress rule are paced.
func (p *Pacer) AddNetns(cookie uint64, ifindex int) error {
	if err := p.objs.KspNodeNetns.Put(cookie, uint32(ifindex)); err != nil {
		return fmt.Errorf("recording netns %d for socket pacing: %w", cookie, err)
	}
	return nil
}

// NetnsCookie is the cookie of the caller's network namespace (SO_NETNS_
// COOKIE, Linux >= 5.14), as bpf_get_netns_cookie sees it.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie (SO_NETNS_COOKIE, Linux >= 5.14): %w", err)
	}
	return c, nil
}

// clearIndex deletes ifindex's entries except those of keep, the flow
// accounting of the addresses deleted and, with netns non-nil, the pod's
// netns record.
func clearIndex(rules, groups, netns *ebpf.Map, ifindex int, keep []netip.Addr) error {
	var (
		k    sockpaceKspKey
		v    sockpaceKspRule
		gone []sockpaceKspKey
	)
	it := rules.Iterate()
	for it.Next(&k, &v) {
		if int(v.Ifindex) == ifindex && !slices.Contains(keep, addrOf(k)) {
			gone = append(gone, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing socket-pacing rules: %w", err)
	}
	var errs []error
	if netns != nil && ifindex != 0 {
		var (
			c  uint64
			ix uint32
			cs []uint64
		)
		it := netns.Iterate()
		for it.Next(&c, &ix) {
			if int(ix) == ifindex {
				cs = append(cs, c)
			}
		}
		for _, c := range cs {
			_ = netns.Delete(c)
		}
	}
	for _, k := range gone {
		if err := rules.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting socket pacing of %s: %w", addrOf(k), err))
		}
		if groups != nil {
			for d := uint32(0); d < 2; d++ {
				_ = groups.Delete(sockpaceKspGroupKey{Addr: k, Dir: d})
			}
		}
	}
	return errors.Join(errs...)
}

// ClearIndex removes the pacing of ifindex's pod from the maps pinned in
// pinDir, if there are any: new sockets of the pod are no longer paced,
// and existing ones have their pacing lifted at their next ACK. It loads
// no program (the node CLI's `iface clear` calls it).
func ClearIndex(pinDir string, ifindex int) error {
	rules, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, rulesPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the socket-pacing rules: %w", err)
	}
	defer rules.Close()
	groups, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "ksp_groups"), nil)
	if err == nil {
		defer groups.Close()
	} else {
		groups = nil
	}
	netns, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "ksp_node_netns"), nil)
	if err == nil {
		defer netns.Close()
	} else {
		netns = nil
	}
	return clearIndex(rules, groups, netns, ifindex, nil)
}

// Pinned reports whether socket pacing's maps are pinned in pinDir (an
// agent or CLI run used it there).
func Pinned(pinDir string) bool {
	_, err := os.Stat(filepath.Join(pinDir, rulesPin))
	return err == nil
}

// SetUnpaced records a pod without a paced rule in the maps pinned in
// pinDir, if pacing is in use there (else it does nothing, and loads
// nothing): its sockets are not paced by its own rules any more, but it
// stays one of the node's pods, whose sockets the ingress rules of other
// pods pace.
func SetUnpaced(pinDir string, ifindex int, netns uint64) error {
	rules, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, rulesPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the socket-pacing rules: %w", err)
	}
	defer rules.Close()
	var groups *ebpf.Map
	if g, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "ksp_groups"), nil); err == nil {
		defer g.Close()
		groups = g
	}
	if err := clearIndex(rules, groups, nil, ifindex, nil); err != nil {
		return err
	}
	if netns == 0 {
		return nil
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "ksp_node_netns"), nil)
	if err != nil {
		return fmt.Errorf("opening the socket-pacing netns map: %w", err)
	}
	defer m.Close()
	if err := m.Put(netns, uint32(ifindex)); err != nil {
		return fmt.Errorf("recording netns %d for socket pacing: %w", netns, err)
	}
	return nil
}

// Entry is one paced pod address.
type Entry struct {
	Addr    netip.Addr
	Ifindex int
	Rule    Rule
}

// State is what is pinned in a pin directory: whether the program is
// attached, the paced addresses and the program's counters.
type State struct {
	Attached bool
	Entries  []Entry
	Stats    Stats
}

// Stats are the program's counters, summed over CPUs.
type Stats struct {
	Paced     uint64 `json:"sockets_paced"`     // sockets given a pacing rate
	Updates   uint64 `json:"rate_updates"`      // setsockopt calls
	AppOwned  uint64 `json:"app_owned"`         // sockets with the application's own, lower rate: left alone
	Lifted    uint64 `json:"lifted"`            // sockets whose rule went: pacing lifted
	SetErrors uint64 `json:"setsockopt_errors"` // bpf_setsockopt failures
}

// Read returns the state pinned in pinDir; a zero State when nothing is.
func Read(pinDir string) (State, error) {
	var st State
	if _, err := os.Stat(filepath.Join(pinDir, LinkPin)); err == nil {
		st.Attached = true
	}
	rules, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, rulesPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("opening the socket-pacing rules: %w", err)
	}
	defer rules.Close()
	var (
		k sockpaceKspKey
		v sockpaceKspRule
	)
	it := rules.Iterate()
	for it.Next(&k, &v) {
		st.Entries = append(st.Entries, Entry{Addr: addrOf(k), Ifindex: int(v.Ifindex),
			Rule: Rule{EgressBitsPerSec: v.Rate[0] * 8, IngressBitsPerSec: v.Rate[1] * 8}})
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("listing socket-pacing rules: %w", err)
	}
	if m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "ksp_stats"), nil); err == nil {
		defer m.Close()
		sum := func(i uint32) uint64 {
			var per []uint64
			if m.Lookup(i, &per) != nil {
				return 0
			}
			var s uint64
			for _, v := range per {
				s += v
			}
			return s
		}
		st.Stats = Stats{Paced: sum(0), Updates: sum(1), AppOwned: sum(2), Lifted: sum(3), SetErrors: sum(4)}
	}
	return st, nil
}

// Of returns ifindex's entries in st.
func (st State) Of(ifindex int) []Entry {
	var out []Entry
	for _, e := range st.Entries {
		if e.Ifindex == ifindex {
			out = append(out, e)
		}
	}
	return out
}

// Remove detaches the program (its pinned link is the only reference the
// kernel keeps) and removes the maps' pins. Sockets paced until now keep
// their last rate until they close: nothing runs for them any more.
func Remove(pinDir string) error {
	var errs []error
	for _, n := range append([]string{LinkPin}, mapPins...) {
		if err := os.Remove(filepath.Join(pinDir, n)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("removing %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
