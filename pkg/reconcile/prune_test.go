package reconcile

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
)

func TestPrunePostedForgetsDeletedObjects(t *testing.T) {
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pods.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "alive", UID: "pod-alive"}})
	svcs.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: "web", UID: "svc-alive"}})
	r := &Reconciler{
		w: &kube.Watcher{Pods: listersv1.NewPodLister(pods), Services: listersv1.NewServiceLister(svcs)},
		posted: map[string]string{
			"pod-alive/" + ReasonInvalidAnnotation: "bad",
			"pod-gone/" + ReasonInvalidAnnotation:  "bad",
			"pod-gone/" + ReasonNotShapeable:       "hostNetwork",
			"svc-alive/" + ReasonInvalidAnnotation: "bad",
			"svc-gone/" + ReasonInvalidAnnotation:  "bad",
		},
	}
	r.prunePosted()
	want := []string{"pod-alive/" + ReasonInvalidAnnotation, "svc-alive/" + ReasonInvalidAnnotation}
	if len(r.posted) != len(want) {
		t.Fatalf("posted after pruning: %v, want only %v", r.posted, want)
	}
	for _, k := range want {
		if _, ok := r.posted[k]; !ok {
			t.Errorf("%s was pruned although its object exists", k)
		}
	}
}
