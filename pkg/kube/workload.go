package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Workload names the object that manages a pod, for metric and flow
// labels: the controller owner, with a ReplicaSet resolved to its
// Deployment, or the pod itself when nothing owns it.
type Workload struct {
	Kind string // Deployment, StatefulSet, DaemonSet, Job, ReplicaSet, …, or Pod
	Name string
}

// PodTemplateHashLabel is the label the Deployment controller puts on a
// ReplicaSet's pods; the ReplicaSet is named <deployment>-<hash>.
const PodTemplateHashLabel = "pod-template-hash"

// WorkloadOf resolves a pod's workload from its own metadata only: no
// extra API calls and no RBAC beyond reading pods. A ReplicaSet owner
// (apps) whose name ends in "-" + the pod's pod-template-hash label value
// is a Deployment's: the Deployment's name is the ReplicaSet's without that
// suffix. Other owners (StatefulSet, DaemonSet, Job, a bare ReplicaSet,
// custom controllers) are reported as they are.
func WorkloadOf(pod *corev1.Pod) Workload {
	ref := metav1.GetControllerOf(pod)
	if ref == nil && len(pod.OwnerReferences) > 0 {
		ref = &pod.OwnerReferences[0]
	}
	if ref == nil {
		return Workload{Kind: "Pod", Name: pod.Name}
	}
	if ref.Kind == "ReplicaSet" && strings.HasPrefix(ref.APIVersion, "apps/") {
		if h := pod.Labels[PodTemplateHashLabel]; h != "" {
			if name, ok := strings.CutSuffix(ref.Name, "-"+h); ok && name != "" {
				return Workload{Kind: "Deployment", Name: name}
			}
		}
	}
	return Workload{Kind: ref.Kind, Name: ref.Name}
}
