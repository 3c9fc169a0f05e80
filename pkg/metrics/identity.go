package metrics

import (
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
)

// IdentityFromLister labels a pod from the agent's pod cache: its
// namespace, name and workload (kube.WorkloadOf). A pod missing from the
// cache (deleted a moment ago) is its own workload.
func IdentityFromLister(pods listersv1.PodLister) func(reconcile.PodView) Identity {
	return func(v reconcile.PodView) Identity {
		id := identityFromKey(v)
		if pod, err := pods.Pods(id.Namespace).Get(id.Pod); err == nil && pod.UID == v.UID {
			w := kube.WorkloadOf(pod)
			id.Workload, id.WorkloadKind = w.Name, w.Kind
		}
		return id
	}
}

func identityFromKey(v reconcile.PodView) Identity {
	ns, name, _ := cache.SplitMetaNamespaceKey(v.Key)
	return Identity{Namespace: ns, Pod: name, Workload: name, WorkloadKind: "Pod"}
}
