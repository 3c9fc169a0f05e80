package kubeenv_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

func TestControlPlane(t *testing.T) {
	env := kubeenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := env.Clientset()

	// The binary carries the pinned version, not v0.0.0-master.
	want, err := kubeenv.Version()
	if err != nil {
		t.Fatal(err)
	}
	sv, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if sv.GitVersion != want {
		t.Errorf("server version %q, want %q", sv.GitVersion, want)
	}

	const ns = "kubeenv-test"
	if _, err := env.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	nodeA, err := env.CreateNode(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.CreateNode(ctx, "node-b"); err != nil {
		t.Fatal(err)
	}

	pod, err := env.CreatePodWithIPs(ctx, ns, "web-0", "node-a", []string{"10.244.0.7"},
		map[string]string{"kubeshaper.io/egress-bandwidth": "10M"}, map[string]string{"app": "web"})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != "10.244.0.7" {
		t.Errorf("created pod status: phase %q ip %q", pod.Status.Phase, pod.Status.PodIP)
	}
	auto, err := env.CreatePod(ctx, ns, "web-1", "node-a", nil, map[string]string{"app": "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(auto.Status.PodIP); ip == nil || !mustCIDR(t, nodeA.Spec.PodCIDR).Contains(ip) {
		t.Errorf("auto pod IP %q not in node-a's pod CIDR %s", auto.Status.PodIP, nodeA.Spec.PodCIDR)
	}
	if _, err := env.CreatePod(ctx, ns, "other-0", "node-b", nil, map[string]string{"app": "other"}); err != nil {
		t.Fatal(err)
	}
	// Pods in the pre-existing default namespace work too.
	if _, err := env.CreatePod(ctx, metav1.NamespaceDefault, "dflt", "node-b", nil, nil); err != nil {
		t.Fatal(err)
	}

	svc, err := env.CreateService(ctx, ns, "web", map[string]string{"app": "web"}, map[string]string{"kubeshaper.io/x": "y"})
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || !mustCIDR(t, kubeenv.ServiceCIDR).Contains(ip) {
		t.Errorf("service ClusterIP %q not in %s", svc.Spec.ClusterIP, kubeenv.ServiceCIDR)
	}

	// What a node agent does: list only its own node's pods.
	checkNodeA := func(t *testing.T, cs kubernetes.Interface) {
		t.Helper()
		list, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("spec.nodeName", "node-a").String(),
		})
		if err != nil {
			t.Fatalf("list pods on node-a: %v", err)
		}
		got := map[string]corev1.Pod{}
		for _, p := range list.Items {
			got[p.Namespace+"/"+p.Name] = p
		}
		if len(got) != 2 {
			t.Fatalf("pods on node-a: got %d (%v), want web-0 and web-1", len(got), keys(got))
		}
		p, ok := got[ns+"/web-0"]
		if !ok {
			t.Fatalf("web-0 missing from node-a's pods: %v", keys(got))
		}
		if p.Status.Phase != corev1.PodRunning {
			t.Errorf("web-0 phase %q, want Running", p.Status.Phase)
		}
		if p.Status.PodIP != "10.244.0.7" || len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != "10.244.0.7" {
			t.Errorf("web-0 IPs %q %v, want 10.244.0.7", p.Status.PodIP, p.Status.PodIPs)
		}
		if p.Status.HostIP != nodeA.Status.Addresses[0].Address {
			t.Errorf("web-0 hostIP %q, want node-a's %q", p.Status.HostIP, nodeA.Status.Addresses[0].Address)
		}
		if !podReady(&p) {
			t.Errorf("web-0 not Ready: %+v", p.Status.Conditions)
		}
		if p.Annotations["kubeshaper.io/egress-bandwidth"] != "10M" || p.Labels["app"] != "web" {
			t.Errorf("web-0 metadata lost: annotations %v labels %v", p.Annotations, p.Labels)
		}
	}
	checkNodeA(t, cs)

	services, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(services.Items) != 1 || services.Items[0].Spec.Selector["app"] != "web" {
		t.Fatalf("list services: %v %+v", err, services)
	}

	// The kubeconfig file works on its own.
	cfg, err := clientcmd.BuildConfigFromFlags("", env.KubeconfigPath())
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	checkNodeA(t, kubernetes.NewForConfigOrDie(cfg))

	// SetPodIP changes the IP as a kubelet would.
	if _, err := env.SetPodIP(ctx, ns, "web-1", "10.244.0.200"); err != nil {
		t.Fatal(err)
	}
	if p, err := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{}); err != nil || p.Status.PodIP != "10.244.0.200" {
		t.Fatalf("after SetPodIP: %v, ip %q", err, p.Status.PodIP)
	}

	// An API outage: the apiserver goes away, etcd keeps the data.
	if err := env.StopAPIServer(); err != nil {
		t.Fatalf("stop apiserver: %v", err)
	}
	if env.APIServerRunning() {
		t.Fatal("apiserver still running after StopAPIServer")
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	_, err = cs.CoreV1().Pods(ns).Get(short, "web-0", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Fatal("Get succeeded while the apiserver was stopped")
	}
	t.Logf("during the outage: %v", err)

	t0 := time.Now()
	if err := env.StartAPIServer(ctx); err != nil {
		t.Fatalf("restart apiserver: %v", err)
	}
	t.Logf("apiserver restarted in %s", time.Since(t0).Round(time.Millisecond))
	checkNodeA(t, cs) // same clientset, same port: still works

	// Deleting a pod with no kubelet finishes at once.
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("web-1 after delete: err = %v, want NotFound", err)
	}

	// Attach: an Env from a kubeconfig for another address of this
	// apiserver (as a qemu guest's forward is) works with the helpers.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.WriteKubeconfigFor(kc, strings.Replace(env.Host(), "127.0.0.1", "localhost", 1)); err != nil {
		t.Fatal(err)
	}
	att, err := kubeenv.Attach(kc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := att.CreateNode(ctx, "node-attached"); err != nil {
		t.Fatalf("CreateNode through Attach: %v", err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "node-attached", metav1.GetOptions{}); err != nil {
		t.Fatalf("node created through Attach: %v", err)
	}
	if err := att.Stop(); err != nil || !env.APIServerRunning() {
		t.Fatalf("Stop of an attached Env: %v; the apiserver must still run", err)
	}

	// Stop really stops: the apiserver port goes dark and the dir is removed.
	dir := env.Dir()
	if err := env.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still exists after Stop (err %v)", dir, err)
	}
	if c, err := net.DialTimeout("tcp", env.Host()[len("https://"):], time.Second); err == nil {
		c.Close()
		t.Errorf("apiserver port %s still accepting after Stop", env.Host())
	}
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatalf("parse CIDR %q: %v", s, err)
	}
	return n
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func keys(m map[string]corev1.Pod) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
