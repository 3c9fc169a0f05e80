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
	const chunk = 1024
	keys := make([]FlowKey, chunk)
	vals := make([]FlowStats, chunk)
	var out []Flow
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.KsFlows.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out = append(out, Flow{Key: keys[i], Stats: vals[i]})
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
