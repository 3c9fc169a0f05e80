package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// PodSideProgram loads an instance of the pod-side program for one
// direction, bound to the host veth hostIfindex: its rule, state and
// counters are that veth's entries for dir. Pod egress runs at the pod
// eth0's tc egress (EDT under fq, or a bypassed host side), pod ingress at
// its tc ingress (a host side that deliveries skip: bpf_redirect_peer, a
// foreign program). Pod interfaces' ifindexes repeat across network
// namespaces, hence one instance per pod and direction with the key baked
// in. The caller attaches it and then closes its handle; the attachment
// keeps the program alive, and removing it (or the pod's netns) frees it.
func (d *Datapath) PodSideProgram(hostIfindex int, dir rules.Direction) (*ebpf.Program, error) {
	spec, err := loadShaper()
	if err != nil {
		return nil, fmt.Errorf("reading kubeshaper's BPF object: %w", err)
	}
	if err := spec.Variables[shaperVarKsHostIfindex].Set(uint32(hostIfindex)); err != nil {
		return nil, fmt.Errorf("setting the pod-side program's interface: %w", err)
	}
	// The duplicate mark this process uses (--duplicate-mark), not the
	// object's default.
	var mark uint32
	if err := d.objs.KsDupMark.Get(&mark); err == nil && mark != 0 {
		if err := spec.Variables[shaperVarKsDupMark].Set(mark); err != nil {
			return nil, fmt.Errorf("setting the pod-side program's duplicate mark: %w", err)
		}
	}
	repl := map[string]*ebpf.Map{
		shaperMapKsRules:    d.objs.KsRules,
		shaperMapKsStats:    d.objs.KsStats,
		shaperMapKsPcpu:     d.objs.KsPcpu,
		shaperMapKsSlots:    d.objs.KsSlots,
		shaperMapKsSlotHash: d.objs.KsSlotHash,
		shaperMapKsFlows:    d.objs.KsFlows,
		shaperMapKsPeers:    d.objs.KsPeers,
	}
	fitReplacements(spec, repl)
	if err := setFlowMask(spec, d.objs.KsFlows.MaxEntries()); err != nil {
		return nil, err
	}
	if err := useKernelFeatures(spec, d.atomics); err != nil {
		return nil, err
	}
	opts := &ebpf.CollectionOptions{MapReplacements: repl}
	// LoadAndAssign loads only the program asked for (and its maps).
	var prog *ebpf.Program
	if dir == rules.Ingress {
		var objs struct {
			Prog *ebpf.Program `ebpf:"ks_pod_side_ingress"`
		}
		err, prog = spec.LoadAndAssign(&objs, opts), objs.Prog
	} else {
		var objs struct {
			Prog *ebpf.Program `ebpf:"ks_pod_side"`
		}
		err, prog = spec.LoadAndAssign(&objs, opts), objs.Prog
	}
	if err != nil {
		return nil, fmt.Errorf("loading the pod-side %s program for ifindex %d: %w", dir, hostIfindex, err)
	}
	return prog, nil
}
