package sockpace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Map sizes (issue 12). The three hash maps are sized from the node's pod
// capacity, as pkg/datapath's are, and allocate their entries as they are
// added (BPF_F_NO_PREALLOC): an empty map holds only its bucket array (16 B
// per entry it may hold, rounded up to a power of two). Preallocated at
// 16,384 entries each they held 5.0 MiB on every node, at any pod count.
//
// Why no preallocation costs nothing that matters: user space writes
// ksp_rules and ksp_node_netns (one entry per pod address and per pod
// netns, when a pod is applied), and the program creates a ksp_groups entry
// once per (paced address, direction) — at the first flow of a paced pod,
// not per flow: it lives until the pod's rule goes. Lookups, the per-ACK
// path, walk the same buckets either way.
const (
	// DefaultPods sizes the maps when the caller gives no pod count: the
	// kubelet's default --max-pods (datapath.DefaultMaxPods).
	DefaultPods = 110
	// addrsPerPod: a dual-stack pod has one IPv4 and one IPv6 address.
	addrsPerPod = 2
	// churnFactor is the headroom for churn, as pkg/datapath's: entries of
	// pods deleted while the agent was down stay until its garbage
	// collection, and a replaced pod has its old and new sandbox a while.
	churnFactor = 2
	// minEntries keeps tiny test nodes usable.
	minEntries = 64

	bpfFNoPrealloc = 1 // BPF_F_NO_PREALLOC
)

// Sizes are the socket-pacing maps' max entries.
type Sizes struct {
	Rules  int // ksp_rules: one per pod address
	Netns  int // ksp_node_netns: one per pod netns, and the node's own
	Groups int // ksp_groups: one per paced address and direction
}

// SizesForPods sizes the maps for a node that runs up to pods pods (0:
// DefaultPods): ksp_rules pods × 2 addresses × 2 (churn), ksp_groups
// twice that (two directions), ksp_node_netns pods × 2 (churn) + 1 (the
// node's own netns); at least 64 each.
func SizesForPods(pods int) Sizes {
	if pods <= 0 {
		pods = DefaultPods
	}
	rules := pods * addrsPerPod * churnFactor
	return Sizes{
		Rules:  max(minEntries, rules),
		Netns:  max(minEntries, pods*churnFactor+1),
		Groups: max(minEntries, rules*2),
	}
}

func (s Sizes) of(name string) int {
	switch name {
	case sockpaceMapKspRules:
		return s.Rules
	case sockpaceMapKspNodeNetns:
		return s.Netns
	case sockpaceMapKspGroups:
		return s.Groups
	}
	return 0
}

// Full reports whether err is a map out of room (E2BIG: a hash map
// holding max_entries), which a larger size (Open with more Pods, then
// Attach) cures without losing any entry.
func Full(err error) bool { return errors.Is(err, unix.E2BIG) }

// Options say how Open sizes the maps and where it reports what it did to
// pinned maps.
type Options struct {
	// Pods is the node's pod capacity the maps are sized for (see
	// SizesForPods); 0: DefaultPods. Pinned maps that are smaller, or
	// preallocated (an older build's), are replaced by maps of this size
	// with their entries; larger ones are kept (maps never shrink, so that
	// two callers that size differently, the agent and the CLI, do not
	// replace each other's maps back and forth).
	Pods int
	// Logf receives what Open and Attach did to pinned maps; nil: standard
	// error.
	Logf func(format string, args ...any)
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "kubeshaper: "+format+"\n", args...)
}

// replacement is a map this build creates in place of what is pinned under
// its name (nothing, a smaller or preallocated map, another layout). It is
// pinned by Attach, once the program that uses it is attached.
type replacement struct {
	name string
	old  *ebpf.Map // the pinned map it replaces; nil if none
	copy bool      // carry old's entries over (same layout)
	why  string    // for the log
}

// sized reports whether name is one of the maps sized for the node.
func sized(name string) bool { return SizesForPods(1).of(name) != 0 }

// sizeSpec gives the node-sized maps their size and BPF_F_NO_PREALLOC.
func sizeSpec(spec *ebpf.CollectionSpec, s Sizes) {
	for name, ms := range spec.Maps {
		if n := s.of(name); n != 0 {
			ms.MaxEntries = uint32(n)
			ms.Flags |= bpfFNoPrealloc
		}
	}
}

// prepare decides, for each map pinned by name, whether the pinned map
// can be used as it is (returned in use) or a new one replaces it (also in
// use, and listed in repl). It pins nothing and changes no pin: until
// Attach commits the replacements, the node keeps running the program and
// maps it had. spec's sizes are set to the maps used (the loader checks
// replacements against them).
func prepare(pinDir string, spec *ebpf.CollectionSpec, o Options) (use map[string]*ebpf.Map, repl []*replacement, err error) {
	use = map[string]*ebpf.Map{}
	defer func() {
		if err != nil {
			for _, m := range use {
				m.Close()
			}
			for _, r := range repl {
				if r.old != nil {
					r.old.Close()
				}
			}
			use, repl = nil, nil
		}
	}()
	for _, name := range mapPins {
		ms := spec.Maps[name]
		path := filepath.Join(pinDir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return use, repl, fmt.Errorf("socket pacing: opening pinned map %s: %w (remove it to have it recreated)", path, err)
		}
		r := &replacement{name: name, old: old}
		switch {
		case old == nil:
			r.why = "created"
		case old.Type() != ms.Type || old.KeySize() != ms.KeySize || old.ValueSize() != ms.ValueSize:
			r.why = fmt.Sprintf("pinned with another layout (type %s key %d value %d; this build: %s %d %d): recreated, its entries are lost",
				old.Type(), old.KeySize(), old.ValueSize(), ms.Type, ms.KeySize, ms.ValueSize)
		case old.Flags() == ms.Flags && (old.MaxEntries() == ms.MaxEntries || sized(name) && old.MaxEntries() > ms.MaxEntries):
			// Fits: used as it is (a larger one is kept).
			ms.MaxEntries = old.MaxEntries()
			use[name] = old
			continue
		case !sized(name):
			r.why = fmt.Sprintf("pinned with %d entries and flags %#x (this build: %d, %#x): recreated, its entries are lost",
				old.MaxEntries(), old.Flags(), ms.MaxEntries, ms.Flags)
		default:
			n, err := count(old)
			if err != nil {
				return use, repl, fmt.Errorf("socket pacing: reading pinned map %s: %w", path, err)
			}
			if uint32(n) > ms.MaxEntries {
				// More entries than this node's size (a shrink): room
				// for them and as many more.
				ms.MaxEntries = uint32(min(2*n, int(old.MaxEntries())))
			}
			r.copy = true
			r.why = fmt.Sprintf("resized from %d entries (flags %#x) to %d (flags %#x), its %d entries carried over",
				old.MaxEntries(), old.Flags(), ms.MaxEntries, ms.Flags, n)
		}
		s := ms.Copy()
		s.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(s)
		if err != nil {
			if old != nil {
				old.Close()
			}
			return use, repl, fmt.Errorf("socket pacing: creating map %s (%d entries): %w", name, ms.MaxEntries, err)
		}
		use[name] = m
		repl = append(repl, r)
	}
	return use, repl, nil
}

// count is the number of entries in m.
func count(m *ebpf.Map) (int, error) {
	var prev any // nil: the first key
	next := make([]byte, m.KeySize())
	for n := 0; ; n++ {
		err := m.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		prev = slices.Clone(next)
	}
}

// copyEntries puts every entry of from into to (same layout, plain hash
// maps: a bpf_spin_lock in a value is not copied, the kernel skips it).
func copyEntries(from, to *ebpf.Map) (int, error) {
	var k, v []byte
	n := 0
	it := from.Iterate()
	for it.Next(&k, &v) {
		if err := to.Put(k, v); err != nil {
			return n, fmt.Errorf("entry %d: %w", n, err)
		}
		n++
	}
	return n, it.Err()
}

// carryOver copies the entries of the maps being replaced into their
// replacements, just before the program that uses them is attached: what
// the running program and user space wrote until then is kept.
func (p *Pacer) carryOver() error {
	for _, r := range p.repl {
		if !r.copy {
			continue
		}
		nm := p.maps()[r.name]
		if _, err := copyEntries(r.old, nm); err != nil {
			return fmt.Errorf("socket pacing: carrying the entries of pinned map %s over to its %d-entry replacement: %w; nothing was changed (the pinned program and maps keep running)",
				filepath.Join(p.pinDir, r.name), nm.MaxEntries(), err)
		}
	}
	return nil
}

// commitPins pins the replacements in place of the pinned maps, each in
// one rename (readers of the pins never find a name missing). On error the
// pins changed so far are put back: the pins stay those of the maps the
// previous program uses.
func (p *Pacer) commitPins() error {
	for i, r := range p.repl {
		path := filepath.Join(p.pinDir, r.name)
		if err := pinInPlace(p.maps()[r.name], path); err != nil {
			for _, done := range p.repl[:i] {
				dp := filepath.Join(p.pinDir, done.name)
				if done.old != nil {
					_ = pinInPlace(done.old, dp)
				} else {
					_ = os.Remove(dp)
				}
			}
			return fmt.Errorf("socket pacing: pinning the new map %s at %s: %w (the previous maps stay pinned; check the bpffs at %s)", r.name, path, err, p.pinDir)
		}
	}
	for _, r := range p.repl {
		if r.why != "created" || r.old != nil {
			p.opts.logf("socket-pacing map %s: %s", r.name, r.why)
		}
	}
	p.dropReplaced()
	return nil
}

// dropReplaced releases the replaced maps (the kernel frees them with the
// last program that uses them).
func (p *Pacer) dropReplaced() {
	for _, r := range p.repl {
		if r.old != nil {
			r.old.Close()
		}
	}
	p.repl = nil
}

// pinInPlace pins m at path in place of what is pinned there, in one
// rename. It pins a clone: a handle opened from a pin remembers its path,
// and pinning it elsewhere would move that pin instead.
func pinInPlace(m *ebpf.Map, path string) error {
	c, err := m.Clone()
	if err != nil {
		return err
	}
	defer c.Close()
	tmp := path + "_replacing" // no dots: the bpffs refuses them
	os.Remove(tmp)
	if err := c.Pin(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// maps indexes the loaded maps by name.
func (p *Pacer) maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		sockpaceMapKspRules:     p.objs.KspRules,
		sockpaceMapKspGroups:    p.objs.KspGroups,
		sockpaceMapKspStats:     p.objs.KspStats,
		sockpaceMapKspNodeNetns: p.objs.KspNodeNetns,
		sockpaceMapKspSocks:     p.objs.KspSocks,
	}
}
