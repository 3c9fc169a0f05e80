package reconcile

import (
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// prunePosted forgets the warnings remembered for objects that no longer
// exist (deleted pods and Services): the memory of what was posted is
// keyed by UID, and without this every churned pod that once had an
// invalid annotation (or was not shapeable) would stay in it for good.
func (r *Reconciler) prunePosted() {
	live := map[string]bool{}
	if pods, err := r.w.Pods.List(labels.Everything()); err == nil {
		for _, p := range pods {
			live[string(p.UID)] = true
		}
	}
	if svcs, err := r.w.Services.List(labels.Everything()); err == nil {
		for _, s := range svcs {
			live[string(s.UID)] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.posted {
		if uid, _, _ := strings.Cut(k, "/"); !live[uid] {
			delete(r.posted, k)
		}
	}
}
