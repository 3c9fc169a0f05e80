package datapath

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
)

// flowWays is KS_FLOW_WAYS: the records a set of ks_flows holds.
var flowWays = len(flowSet{}.Ways)

// flowSets is the number of sets of a table of at least entries records:
// a power of two (the programs mask the hash with ks_flow_sets_mask).
func flowSets(entries int) uint32 {
	n := max(1, (entries+flowWays-1)/flowWays)
	return uint32(1) << bits.Len(uint(n-1))
}

// flowEntriesOf is the records a pinned ks_flows holds: sets × ways, or,
// for the LRU hash of builds before the table, its max_entries.
func flowEntriesOf(m *ebpf.Map) int {
	if m.Type() == ebpf.Array {
		return int(m.MaxEntries()) * flowWays
	}
	return int(m.MaxEntries())
}

// pinnedFlowEntries is flowEntriesOf the ks_flows pinned in pinDir, 0 if none.
func pinnedFlowEntries(pinDir string) int {
	m, err := ebpf.LoadPinnedMap(pinDir+"/"+shaperMapKsFlows, nil)
	if err != nil {
		return 0
	}
	defer m.Close()
	return flowEntriesOf(m)
}

// setFlowMask gives the programs of spec the mask of a table of sets sets.
func setFlowMask(spec *ebpf.CollectionSpec, sets uint32) error {
	if err := spec.Variables[shaperVarKsFlowSetsMask].Set(sets - 1); err != nil {
		return fmt.Errorf("sizing the flow table: %w", err)
	}
	return nil
}

// flowSetOf is flow_set of bpf/lib/flows.h: the set a key lives in.
func flowSetOf(k FlowKey, mask uint32) uint32 {
	var b [44]byte
	binary.LittleEndian.PutUint32(b[0:], k.Ifindex)
	b[4], b[5], b[6], b[7] = k.Dir, k.Proto, k.Family, k.Pad
	binary.LittleEndian.PutUint16(b[8:], k.Sport)
	binary.LittleEndian.PutUint16(b[10:], k.Dport)
	copy(b[12:], k.Saddr[:])
	copy(b[28:], k.Daddr[:])
	w := func(i int) uint64 { return uint64(binary.LittleEndian.Uint32(b[4*i:])) }
	h := w(0) * 0x9E3779B97F4A7C15
	h ^= w(1) * 0xC2B2AE3D27D4EB4F
	h ^= w(2) * 0x165667B19E3779F9
	h ^= w(3) * 0x85EBCA77C2B2AE63
	h ^= w(7) * 0x27D4EB2F165667C5
	if k.Family == 6 {
		h ^= (w(4) ^ w(8)) * 0x94D049BB133111EB
		h ^= (w(5) ^ w(9)) * 0xBF58476D1CE4E5B9
		h ^= (w(6) ^ w(10)) * 0xFF51AFD7ED558CCD
	}
	return (uint32(h>>32) ^ uint32(h)) & mask
}

// migrateFlows re-homes the records of the pinned table old into a new
// one made from spec (another size: each key's set changes with the mask)
// and pins it in old's place. A set of the new table that overflows keeps
// its most recently seen records, as the programs' eviction would.
func migrateFlows(old *ebpf.Map, spec *ebpf.MapSpec, path string) (int, error) {
	nm, err := newUnpinned(spec)
	if err != nil {
		return 0, err
	}
	defer nm.Close()
	sets := make([]flowSet, spec.MaxEntries)
	var v flowSet
	n := 0
	for i := uint32(0); i < old.MaxEntries(); i++ {
		if err := old.LookupWithFlags(i, &v, ebpf.LookupLock); err != nil {
			return n, fmt.Errorf("reading set %d: %w", i, err)
		}
		for _, w := range v.Ways {
			if w.Key.Family == 0 {
				continue
			}
			dst := &sets[flowSetOf(w.Key, spec.MaxEntries-1)]
			victim := 0
			for j := range dst.Ways {
				if dst.Ways[j].Key.Family == 0 {
					victim = j
					break
				}
				if dst.Ways[j].Stats.LastJiffies < dst.Ways[victim].Stats.LastJiffies {
					victim = j
				}
			}
			if dst.Ways[victim].Key.Family != 0 {
				if dst.Ways[victim].Stats.LastJiffies >= w.Stats.LastJiffies {
					continue
				}
				n--
			}
			dst.Ways[victim] = w
			n++
		}
	}
	for i := range sets {
		if err := nm.Put(uint32(i), &sets[i]); err != nil {
			return n, fmt.Errorf("writing set %d: %w", i, err)
		}
	}
	return n, pinInPlace(nm, path)
}

// FlowRecords counts the records in use in a ks_flows table (m as pinned):
// an ARRAY's entries always exist, so leftover checks count ways instead.
func FlowRecords(m *ebpf.Map) (int, error) {
	var v flowSet
	n := 0
	for i := uint32(0); i < m.MaxEntries(); i++ {
		if err := m.Lookup(i, &v); err != nil {
			return n, fmt.Errorf("reading flow set %d: %w", i, err)
		}
		for _, w := range v.Ways {
			if w.Key.Family != 0 {
				n++
			}
		}
	}
	return n, nil
}
