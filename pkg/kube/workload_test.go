package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWorkloadOf(t *testing.T) {
	yes := true
	owner := func(apiVersion, kind, name string, controller bool) []metav1.OwnerReference {
		r := metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: "u"}
		if controller {
			r.Controller = &yes
		}
		return []metav1.OwnerReference{r}
	}
	cases := []struct {
		name   string
		labels map[string]string
		owners []metav1.OwnerReference
		want   Workload
	}{
		{"no owner", nil, nil, Workload{"Pod", "p"}},
		{"deployment", map[string]string{"pod-template-hash": "5d4f7c9b8"}, owner("apps/v1", "ReplicaSet", "web-5d4f7c9b8", true), Workload{"Deployment", "web"}},
		{"deployment with dashes", map[string]string{"pod-template-hash": "7f9c"}, owner("apps/v1", "ReplicaSet", "my-api-v2-7f9c", true), Workload{"Deployment", "my-api-v2"}},
		{"bare replicaset", nil, owner("apps/v1", "ReplicaSet", "web-5d4f7c9b8", true), Workload{"ReplicaSet", "web-5d4f7c9b8"}},
		{"hash does not match", map[string]string{"pod-template-hash": "aaaa"}, owner("apps/v1", "ReplicaSet", "web-5d4f7c9b8", true), Workload{"ReplicaSet", "web-5d4f7c9b8"}},
		{"hash is the whole name", map[string]string{"pod-template-hash": "x"}, owner("apps/v1", "ReplicaSet", "-x", true), Workload{"ReplicaSet", "-x"}},
		{"not apps", map[string]string{"pod-template-hash": "5d4f"}, owner("example.com/v1", "ReplicaSet", "web-5d4f", true), Workload{"ReplicaSet", "web-5d4f"}},
		{"statefulset", nil, owner("apps/v1", "StatefulSet", "db", true), Workload{"StatefulSet", "db"}},
		{"daemonset", nil, owner("apps/v1", "DaemonSet", "agent", true), Workload{"DaemonSet", "agent"}},
		{"job", nil, owner("batch/v1", "Job", "backup-28000000", true), Workload{"Job", "backup-28000000"}},
		{"owner without controller flag", nil, owner("apps/v1", "StatefulSet", "db", false), Workload{"StatefulSet", "db"}},
	}
	for _, tc := range cases {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Labels: tc.labels, OwnerReferences: tc.owners}}
		if got := WorkloadOf(pod); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
