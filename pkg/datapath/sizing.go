package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Map sizes. Every map keyed by {interface, direction} (rules, counters,
// the interface records, pod names) holds at most two keys per pod; it is
// sized from the node's pod capacity with room for churn: entries of pods
// deleted while the agent was down stay until its first garbage collection,
// and a pod being replaced has both its old and its new veth for a while.
// Flows (a set-associative table, bpf/lib/flows.h) keep their own bound.
const (
	// DefaultMaxPods is the kubelet's default --max-pods, the size the
	// CLI uses when it finds no pinned maps (the agent sizes from the
	// Node's allocatable pods).
	DefaultMaxPods = 110
	// ChurnFactor is the headroom over two keys per pod.
	ChurnFactor = 2
	// DefaultFlowEntries bounds ks_flows: 2,048 sets of 8. A full set
	// evicts its least recently seen flow, so flows go before the table
	// is full: of uniformly hashed flows, 0.8 % at 8,192 live flows (32 a
	// pod at 250 pods), 5 % at 12,288, 14 % at 16,384 (Poisson overflow of
	// 8-way sets), where an LRU hash kept all 16,384 at 2.6 MB against
	// this table's 1.6 MB.
	DefaultFlowEntries = 16384
	// minEntries keeps tiny test nodes usable.
	minEntries = 64
)

// EntriesForPods is the key-indexed maps' size for a node that runs up to
// pods pods.
func EntriesForPods(pods int) int {
	return max(minEntries, pods*2*ChurnFactor)
}

// MaxPods is the pod count the key-indexed maps are sized for: what
// EntriesForPods was given, or what the size of the maps pinned implies.
// pkg/sockpace sizes its maps from it, so that the agent and the CLI size
// both alike.
func (d *Datapath) MaxPods() int { return d.opts.Entries / (2 * ChurnFactor) }

// Logf reports what a loader did to pinned state where Options.Logf says
// (pkg/sockpace's maps, kept beside these).
func (d *Datapath) Logf(format string, args ...any) { d.logf(format, args...) }

// Options size the maps when they are created (or migrated).
type Options struct {
	// Entries sizes the key-indexed maps; 0 takes the size of the maps
	// already pinned, or EntriesForPods(DefaultMaxPods) if there are none.
	// A pinned map of another size is migrated to this one.
	Entries int
	// FlowEntries bounds ks_flows (rounded up to a power of two); 0 as
	// Entries, with DefaultFlowEntries.
	FlowEntries int
	// BPFFS is the bpffs to pin under (OpenDefaultWith); "" finds it as
	// DefaultPinDir says.
	BPFFS string
	// Logf receives what the loader did to pinned maps (migrated,
	// recreated, stale directories removed); nil: standard error.
	Logf func(format string, args ...any)
}

const bpfFNoPrealloc = 1 // BPF_F_NO_PREALLOC

// pinnedEntries is the max_entries of the map pinned as name, 0 if none.
func pinnedEntries(pinDir, name string) int {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
	if err != nil {
		return 0
	}
	defer m.Close()
	return int(m.MaxEntries())
}

// reconcilePin makes the map pinned under spec.Name fit spec, or removes
// it so that the loader creates it anew:
//   - same layout and size: nothing to do;
//   - same type, key, value and flags, another size (the node's pod
//     capacity changed): a new map of spec's size gets every entry of the
//     pinned one and replaces its pin atomically (rename on the bpffs).
//     Programs attached before keep the old map until their filter is
//     replaced (the agent re-applies every interface at start), so counts
//     of those few seconds are lost, rules, buckets and counters are not;
//   - another layout (an older build): removed, its state lost, logged.
//
// Never silently half-used: a pin that is neither is not opened.
func (d *Datapath) reconcilePin(spec *ebpf.MapSpec) error {
	path := filepath.Join(d.pinDir, spec.Name)
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening pinned map %s: %w", path, err)
	}
	defer old.Close()
	info, err := old.Info()
	if err != nil {
		return fmt.Errorf("reading pinned map %s: %w", path, err)
	}
	// Preallocation is how the kernel holds the entries, not their
	// layout: a map that changes it is migrated like a resized one.
	sameLayout := old.Type() == spec.Type && old.KeySize() == spec.KeySize &&
		old.ValueSize() == spec.ValueSize && info.Flags&^bpfFNoPrealloc == spec.Flags&^bpfFNoPrealloc
	if sameLayout && old.MaxEntries() == spec.MaxEntries && info.Flags == spec.Flags {
		return nil
	}
	if !sameLayout {
		d.logf("map %s: pinned with another layout (type %s key %d value %d flags %#x; this build: %s %d %d %#x): recreated, its entries are lost",
			spec.Name, old.Type(), old.KeySize(), old.ValueSize(), info.Flags, spec.Type, spec.KeySize, spec.ValueSize, spec.Flags)
		return removePin(path)
	}
	migrateMap := migrate
	if spec.Name == shaperMapKsFlows {
		migrateMap = migrateFlows // a record's set depends on the size
	}
	n, err := migrateMap(old, spec, path)
	if err != nil {
		return fmt.Errorf("map %s: migrating %d to %d entries: %w", spec.Name, old.MaxEntries(), spec.MaxEntries, err)
	}
	d.logf("map %s: resized from %d to %d entries (flags %#x to %#x), %d entries carried over", spec.Name, old.MaxEntries(), spec.MaxEntries, info.Flags, spec.Flags, n)
	return nil
}

func removePin(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// migrate copies every entry of old into a new map made from spec and
// pins it in old's place. More entries than spec holds is an error (the
// old pin is kept): a smaller size than the node already uses is refused.
func migrate(old *ebpf.Map, spec *ebpf.MapSpec, path string) (int, error) {
	nm, err := newUnpinned(spec)
	if err != nil {
		return 0, err
	}
	defer nm.Close()
	keyT := reflect.ArrayOf(int(spec.KeySize), reflect.TypeOf(byte(0)))
	valT := reflect.ArrayOf(int(spec.ValueSize), reflect.TypeOf(byte(0)))
	perCPU := spec.Type == ebpf.PerCPUHash || spec.Type == ebpf.PerCPUArray || spec.Type == ebpf.LRUCPUHash
	if perCPU {
		valT = reflect.SliceOf(valT)
	}
	k := reflect.New(keyT)
	v := reflect.New(valT)
	n := 0
	it := old.Iterate()
	for it.Next(k.Interface(), v.Interface()) {
		if err := nm.Put(k.Elem().Interface(), v.Elem().Interface()); err != nil {
			return n, fmt.Errorf("copying entry %d: %w", n, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, err
	}
	return n, pinInPlace(nm, path)
}

func (d *Datapath) logf(format string, args ...any) {
	if d.opts.Logf != nil {
		d.opts.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "kubeshaper: "+format+"\n", args...)
}

// sizeSpec sets the maps' sizes and flags for this node.
func (d *Datapath) sizeSpec(spec *ebpf.CollectionSpec) {
	for _, name := range []string{shaperMapKsRules, shaperMapKsStats, shaperMapKsPcpu} {
		spec.Maps[name].MaxEntries = uint32(d.opts.Entries)
	}
	spec.Maps[shaperMapKsSlotHash].MaxEntries = uint32(d.opts.Entries / 2)
	spec.Maps[shaperMapKsFlows].MaxEntries = flowSets(d.opts.FlowEntries)
}

// keepLarger never shrinks pinned maps: a node whose capacity went down
// keeps the size its entries were given (slots beyond a smaller array
// would be cut off), and says so.
func (d *Datapath) keepLarger() {
	if n := pinnedEntries(d.pinDir, shaperMapKsRules); n > d.opts.Entries {
		d.logf("maps pinned for %d entries, %d asked: keeping %d (maps never shrink)", n, d.opts.Entries, n)
		d.opts.Entries = n
	}
	if n := pinnedFlowEntries(d.pinDir); n > d.opts.FlowEntries {
		d.opts.FlowEntries = n
	}
}

// resolveSizes fills in the defaults of o from what is pinned in pinDir.
func resolveSizes(pinDir string, o Options) Options {
	if o.Entries == 0 {
		o.Entries = pinnedEntries(pinDir, shaperMapKsRules)
	}
	if o.Entries == 0 {
		o.Entries = EntriesForPods(DefaultMaxPods)
	}
	if o.FlowEntries == 0 {
		o.FlowEntries = pinnedFlowEntries(pinDir)
	}
	if o.FlowEntries == 0 {
		o.FlowEntries = DefaultFlowEntries
	}
	return o
}

// fitReplacements gives spec's maps the size and flags of the node's maps
// that replace them at load time (the compiled-in sizes are placeholders).
func fitReplacements(spec *ebpf.CollectionSpec, repl map[string]*ebpf.Map) {
	for name, m := range repl {
		ms, ok := spec.Maps[name]
		if !ok {
			continue
		}
		ms.MaxEntries = m.MaxEntries()
		ms.Flags = m.Flags()
	}
}

// useKernelFeatures tells the programs what the kernel offers the token
// bucket: bpf_ktime_get_coarse_ns (5.11+, bucket_now) and BPF atomics
// (5.12+, bucket_admit_atomic); without them the programs take the
// slower clock and the spin lock.
func useKernelFeatures(spec *ebpf.CollectionSpec, atomics bool) error {
	if features.HaveProgramHelper(ebpf.SchedCLS, asm.FnKtimeGetCoarseNs) == nil {
		if err := spec.Variables[shaperVarKsCoarseClock].Set(uint32(1)); err != nil {
			return fmt.Errorf("enabling the coarse clock: %w", err)
		}
	}
	if atomics {
		if err := spec.Variables[shaperVarKsAtomics].Set(uint32(1)); err != nil {
			return fmt.Errorf("enabling atomics: %w", err)
		}
		return nil
	}
	// The branch ks_atomics rules out is never walked, but kernels before
	// 5.12 refuse its instructions on sight ("BPF_STX uses reserved
	// fields"): blank them. Fetching atomics and compare-exchange only
	// appear there (plain atomic adds, 5.10's, are kept).
	for _, p := range spec.Programs {
		for i, ins := range p.Instructions {
			if op := ins.OpCode.AtomicOp(); op != asm.InvalidAtomic && op != asm.AddAtomic {
				p.Instructions[i] = asm.Mov.Reg(asm.R0, asm.R0).WithMetadata(ins.Metadata)
			}
		}
	}
	return nil
}

var atomicsProbe = sync.OnceValue(func() bool {
	// A compare-exchange on the stack: r0 = cmpxchg(r10-8, r0, r1).
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.Mov.Imm(asm.R1, 1),
			asm.CmpXchg.Mem(asm.RFP, asm.R1, asm.DWord, -8),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return false
	}
	p.Close()
	return true
})

func haveAtomics() bool { return atomicsProbe() }

// newUnpinned makes a map from spec that is not pinned yet: the one a
// migration fills before pinInPlace puts it under the old one's name.
func newUnpinned(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	s := spec.Copy()
	s.Pinning = ebpf.PinNone
	return ebpf.NewMap(s)
}

// pinInPlace pins m at path in place of what is pinned there, in one
// rename: the programs' next load, and other readers, never find the name
// missing.
func pinInPlace(m *ebpf.Map, path string) error {
	tmp := path + "_migrating" // no dots: the bpffs refuses them
	os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
