package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// FlowsBatch lists every flow record like Flows, with BPF_MAP_LOOKUP_BATCH
// (a few syscalls for the whole map instead of two per record); where the
// kernel has no batch operations for the map it falls back to Flows.
func (d *Datapath) FlowsBatch() ([]Flow, error) {
	const chunk = 128 // sets: 100 KB a call
	keys := make([]uint32, chunk)
	vals := make([]flowSet, chunk)
	var out []Flow
	var cursor ebpf.MapBatchCursor
	// Each set copied under its lock, as Flows.
	opts := &ebpf.BatchOptions{ElemFlags: uint64(ebpf.LookupLock)}
	for {
		n, err := d.objs.KsFlows.BatchLookup(&cursor, keys, vals, opts)
		for i := range n {
			out = vals[i].appendFlows(out, keys[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return d.Flows()
		}
		if err != nil {
			return nil, fmt.Errorf("listing flows: %w", err)
		}
	}
}
