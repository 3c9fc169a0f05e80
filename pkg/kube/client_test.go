package kube_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// TestClientAgainstAPIServer drives every use the agent makes of its
// narrow client against a real kube-apiserver: the Node read that sizes
// the maps, /readyz, the informers' list and watch of pods (by field
// selector), Services and EndpointSlices, and the event recorder's
// create and then patch (a repeated Event is counted, not duplicated).
// ~4.5 s, most of it the control plane's start.
func TestClientAgainstAPIServer(t *testing.T) {
	env := kubeenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := env.CreateNode(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	c, err := kube.NewClient(env.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	if err := c.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	node, err := c.Node(ctx, "node-a")
	if err != nil {
		t.Fatalf("Node: %v", err)
	}
	if q := node.Status.Allocatable[corev1.ResourcePods]; q.Value() != 512 {
		t.Errorf("Node node-a: allocatable pods %v, want 512 (kubeenv.CreateNode)", q.String())
	}
	if _, err := c.Node(ctx, "node-none"); !apierrors.IsNotFound(err) {
		t.Errorf("Node of a missing node: %v, want a NotFound (wrapped) status", err)
	}

	// Informers: one pod on this node before the start, one on another
	// node (the field selector must hide it), one after (the watch).
	for _, p := range [][2]string{{"before", "node-a"}, {"elsewhere", "node-b"}} {
		if _, err := env.CreatePod(ctx, "default", p[0], p[1], nil, map[string]string{"app": "web"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.CreateService(ctx, "default", "web", map[string]string{"app": "web"}, nil); err != nil {
		t.Fatal(err)
	}
	w, err := kube.NewWatcher(c, "node-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Queue.ShutDown()
	changed := make(chan string, 16)
	if err := w.WatchEndpoints(func(ns, name string) { changed <- ns + "/" + name }); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	w.Start(stop)
	if !w.WaitForSync(ctx.Done()) {
		t.Fatal("the caches did not sync")
	}
	if _, err := env.CreatePod(ctx, "default", "after", "node-a", nil, map[string]string{"app": "web"}); err != nil {
		t.Fatal(err)
	}
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.77"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
	if _, err := env.Clientset().DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-changed:
		if got != "default/web" {
			t.Errorf("EndpointSlice change for %q, want default/web", got)
		}
	case <-ctx.Done():
		t.Fatal("no EndpointSlice change was delivered")
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		pods, err := w.Pods.List(labels.Everything())
		return err == nil && len(pods) == 2, err
	})
	if pods, _ := w.Pods.List(labels.Everything()); err != nil || len(pods) != 2 {
		t.Fatalf("the pod cache holds %d pods, want before and after on node-a (%v)", len(pods), err)
	}
	if _, err := w.Pods.Pods("default").Get("elsewhere"); !apierrors.IsNotFound(err) {
		t.Errorf("the pod of another node is in the cache (%v): the field selector was not sent", err)
	}
	if addrs := fmt.Sprint(w.ServiceAddresses("default", "web")); addrs == "[]" || !containsAddr(w.ServiceAddresses("default", "web"), "10.244.0.77") {
		t.Errorf("ServiceAddresses(default/web) = %s, want the slice's 10.244.0.77", addrs)
	}

	// Events: the same Event twice is one Event with count 2 (the second
	// write is a strategic-merge patch).
	pod, err := w.Pods.Pods("default").Get("before")
	if err != nil {
		t.Fatal(err)
	}
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(c.EventSink())
	defer bc.Shutdown()
	rec := bc.NewRecorder(c.Scheme, corev1.EventSource{Component: "kubeshaper-agent", Host: "node-a"})
	rec.Event(pod, corev1.EventTypeNormal, "Applied", "rate=1mbit on veth1")
	events := env.Clientset().CoreV1().Events("default")
	sel := fields.Set{"involvedObject.name": "before", "reason": "Applied"}.String()
	count := func() (int32, string) {
		l, err := events.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil || len(l.Items) == 0 {
			return 0, fmt.Sprint(err)
		}
		e := l.Items[0]
		return e.Count, fmt.Sprintf("%d Events; kind %s %s, count %d", len(l.Items), e.InvolvedObject.APIVersion, e.InvolvedObject.Kind, e.Count)
	}
	waitCount := func(want int32) {
		t.Helper()
		var last string
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			var n int32
			n, last = count()
			return n == want, nil
		})
		if err != nil {
			t.Fatalf("the Event's count did not reach %d: %s", want, last)
		}
	}
	waitCount(1)
	rec.Event(pod, corev1.EventTypeNormal, "Applied", "rate=1mbit on veth1")
	waitCount(2)
	l, err := events.List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	if e := l.Items[0]; len(l.Items) != 1 || e.InvolvedObject.Kind != "Pod" || e.InvolvedObject.APIVersion != "v1" || e.Source.Component != "kubeshaper-agent" {
		t.Errorf("Events: %d, the first about %s %s from %q; want one, about a v1 Pod, from kubeshaper-agent",
			len(l.Items), e.InvolvedObject.APIVersion, e.InvolvedObject.Kind, e.Source.Component)
	}
}

func containsAddr[T fmt.Stringer](list []T, s string) bool {
	for _, a := range list {
		if a.String() == s {
			return true
		}
	}
	return false
}
