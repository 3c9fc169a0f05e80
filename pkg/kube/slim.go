package kube

import (
	corev1 "k8s.io/api/core/v1"
)

// slimPod keeps only what the agent reads of a pod, so that the cache of a
// node's pods costs little memory (managed fields, container specs and
// statuses dominate a Pod's size and are never used here).
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: p.ObjectMeta,
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	out.ManagedFields = nil
	return out, nil
}

// slimService keeps a Service's metadata, selector and cluster IPs (the
// addresses of a to=svc: target).
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{
		TypeMeta:   s.TypeMeta,
		ObjectMeta: s.ObjectMeta,
		Spec:       corev1.ServiceSpec{Selector: s.Spec.Selector, ClusterIPs: s.Spec.ClusterIPs},
	}
	out.ManagedFields = nil
	return out, nil
}
