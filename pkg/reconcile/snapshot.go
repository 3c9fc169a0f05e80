package reconcile

import (
	"sort"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// PodView is one pod the agent applies state to, for metrics and export.
type PodView struct {
	Key      string // namespace/name
	UID      types.UID
	Ifindex  int    // host veth, in the node netns
	HostVeth string // its name
	Policy   rules.Policy
}

// Snapshot lists the pods the agent currently applies state to, by key.
func (r *Reconciler) Snapshot() []PodView {
	r.mu.Lock()
	out := make([]PodView, 0, len(r.applied))
	for k, st := range r.applied {
		out = append(out, PodView{Key: k, UID: st.uid, Ifindex: st.ifc.Index, HostVeth: st.ifc.Name, Policy: st.policy.Clone()})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
