package kube

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

type metav1ListOptions = metav1.ListOptions

// SelectingServices filters svcs to those in the pod's namespace whose
// non-empty selector matches the pod's labels, sorted by name.
func SelectingServices(pod *corev1.Pod, svcs []*corev1.Service) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range svcs {
		if s.Namespace != pod.Namespace || len(s.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
