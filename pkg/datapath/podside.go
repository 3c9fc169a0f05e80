package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// PodSideProgram loads an instance of the pod-side program (EDT for pod
// egress, attached on the pod's eth0 under fq) bound to the host veth
// hostIfindex: its rule, state and counters are that veth's egress
// entries. The caller attaches it and then closes its handle; the filter
// keeps the program alive, and deleting the filter (or the pod's netns)
// frees it.
func (d *Datapath) PodSideProgram(hostIfindex int) (*ebpf.Program, error) {
	spec, err := loadShaper()
	if err != nil {
		return nil, fmt.Errorf("reading kubeshaper's BPF object: %w", err)
	}
	if err := spec.Variables[shaperVarKsHostIfindex].Set(uint32(hostIfindex)); err != nil {
		return nil, fmt.Errorf("setting the pod-side program's interface: %w", err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"ks_pod_side"`
	}
	opts := &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		shaperMapKsRules: d.objs.KsRules,
		shaperMapKsStats: d.objs.KsStats,
		shaperMapKsFlows: d.objs.KsFlows,
		shaperMapKsPeers: d.objs.KsPeers,
	}}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return nil, fmt.Errorf("loading the pod-side program for ifindex %d: %w", hostIfindex, err)
	}
	return objs.Prog, nil
}
