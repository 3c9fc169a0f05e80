package reconcile

import (
	"sort"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// PodView is one pod the agent applies state to, for metrics and export.
type PodView struct {
	Key      string // namespace/name
	UID      types.UID
	Ifindex  int    // host veth, in the node netns
	HostVeth string // its name
	Policy   rules.Policy
	// Iface is the pod's interface as applied (host veth and pod side),
	// for the agent's /status to judge enforcement through shaper.Node.
	Iface shaper.Interface
	// Enforcement is the position holder's latest judgement per direction
	// (enforced, reason, attachment…; JSON field names are stable: the
	// agent's /status and the kubectl plugin show them). Judged false
	// until the first judgement.
	Enforcement [2]shaper.Enforcement
	// Judged: Enforcement holds a judgement (the holder runs every 2 s).
	Judged bool
}

// Snapshot lists the pods the agent currently applies state to, by key.
func (r *Reconciler) Snapshot() []PodView {
	r.mu.Lock()
	out := make([]PodView, 0, len(r.applied))
	for k, st := range r.applied {
		out = append(out, PodView{Key: k, UID: st.uid, Ifindex: st.ifc.Index, HostVeth: st.ifc.Name, Policy: st.policy.Clone(), Iface: st.ifc})
	}
	r.mu.Unlock()
	for i := range out {
		out[i].Enforcement, out[i].Judged = r.Enforcement(out[i].Key)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Why recomputes what a pod's own annotations and those of the Services
// selecting it ask for, from the agent's caches (no I/O): the sources and
// the invalid keys behind a pod's rules, for the agent's /status. ok is
// false when the pod is no longer in the cache.
func (r *Reconciler) Why(key string) (d Desired, ok bool) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return d, false
	}
	pod, err := r.w.Pods.Pods(ns).Get(name)
	if err != nil {
		return d, false
	}
	svcs, err := r.w.ServicesFor(pod)
	if err != nil {
		return d, false
	}
	return DesiredFor(pod, svcs), true
}
