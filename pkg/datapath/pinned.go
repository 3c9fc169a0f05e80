package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// OpenPinned opens the maps pinned in pinDir without loading (and
// verifying) any program: a read view for tests and tools that look at
// what an agent keeps (Lookup, Keys, Counters work; so do Set and Delete
// of entries, which need no program). It returns an error wrapping
// os.ErrNotExist when nothing is pinned there.
func OpenPinned(pinDir string) (*Datapath, error) {
	d := &Datapath{pinDir: pinDir}
	for name, dst := range map[string]**ebpf.Map{
		shaperMapKsRules:    &d.objs.KsRules,
		shaperMapKsStats:    &d.objs.KsStats,
		shaperMapKsPcpu:     &d.objs.KsPcpu,
		shaperMapKsSlots:    &d.objs.KsSlots,
		shaperMapKsSlotHash: &d.objs.KsSlotHash,
		shaperMapKsFlows:    &d.objs.KsFlows,
		shaperMapKsPeers:    &d.objs.KsPeers,
	} {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if err != nil {
			d.objs.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no kubeshaper maps pinned in %s: %w", pinDir, err)
			}
			return nil, fmt.Errorf("opening pinned map %s in %s: %w", name, pinDir, err)
		}
		*dst = m
	}
	d.opts = Options{Entries: int(d.objs.KsRules.MaxEntries()), FlowEntries: flowEntriesOf(d.objs.KsFlows)}
	return d, nil
}
