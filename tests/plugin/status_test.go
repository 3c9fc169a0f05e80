// Package plugin tests `kubectl kubeshaper` (cmd/kubectl-kubeshaper)
// against a real kube-apiserver (tests/kubeenv) with agents running as
// processes (tests/agentenv), each serving /status on an address of its
// own that the API server's pod proxy reaches (the proxy refuses loopback,
// so the test adds a veth pair with two addresses in 198.18.0.0/15, the
// benchmarking range, removed in t.Cleanup).
package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

func TestMain(m *testing.M) { agentenv.Main(m) }

const agentNS = "kubeshaper-system"

// report mirrors the plugin's -o json.
type report struct {
	Nodes      []string `json:"nodes"`
	Unanswered []struct {
		Node     string  `json:"node"`
		AgentPod string  `json:"agent_pod"`
		Err      string  `json:"error"`
		Seconds  float64 `json:"seconds"`
	} `json:"unanswered"`
	Pods []struct {
		Node string `json:"node"`
		nodestatus.Pod
	} `json:"pods"`
}

func TestStatusAcrossAgents(t *testing.T) {
	w := agentenv.New(t, "op")
	ctx := context.Background()
	plugin := buildPlugin(t)
	ip1, ip2 := dummyAddrs(t)

	for _, ns := range []string{agentNS, "other"} {
		if _, err := w.Env.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node2", "node3"} { // node3: no agent at all
		if _, err := w.Env.CreateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// node1: three pods, one with its own rule, one with a Service's rule
	// and its own, one (another namespace) with an invalid key.
	pa, pb, pc := w.AddPod("a"), w.AddPod("b"), w.AddPod("c")
	w.Pod(pa, "pa", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"})
	w.Pod(pb, "pb", map[string]string{"app": "web"}, map[string]string{"kubeshaper.io/bandwidth": "20mbit ingress"})
	if _, err := w.Env.CreateService(ctx, w.NS, "web", map[string]string{"app": "web"}, map[string]string{"kubeshaper.io/loss": "uniform egress 1%"}); err != nil {
		t.Fatal(err)
	}
	w.PodIn("other", pc, "pc", nil, map[string]string{"kubeshaper.io/bandwidth": "5mbit egress", "kubeshaper.io/delay": "5ms sideways"})

	// node2's agent has a node netns and pin directory of its own (an agent
	// collects every kubeshaper filter of its netns that no pod claims).
	lab2 := netlab.New(t, "op")
	pins2 := w.PinDir + "-node2"
	t.Cleanup(func() { os.RemoveAll(pins2) })
	port1, port2 := agentenv.FreePort(t), agentenv.FreePort(t)
	w.StartAgent(agentenv.Options{Args: []string{"--metrics-addr", fmt.Sprintf("%s:%d", ip1, port1), "--rate-sample", "1s"}})
	ag2 := w.StartAgent(agentenv.Options{BPFFS: pins2, Args: []string{"--node-name", "node2",
		"--node-netns", "/var/run/netns/" + lab2.Node, "--metrics-addr", fmt.Sprintf("%s:%d", ip2, port2)}})
	agentPod(t, w, "kubeshaper-agent-n1", agentenv.NodeName, ip1, port1)
	agentPod(t, w, "kubeshaper-agent-n2", "node2", ip2, port2)

	var rep report
	w.Eventually(30*time.Second, "the plugin shows the three pods' rules", func() (bool, string) {
		out, _, _ := runPlugin(t, plugin, w, "status", "-A", "-o", "json")
		rep = report{}
		if err := json.Unmarshal(out, &rep); err != nil {
			return false, string(out)
		}
		n := 0
		for _, p := range rep.Pods {
			if p.Rules != "none" {
				n++
			}
		}
		return n == 3, string(out)
	})
	if strings.Join(rep.Nodes, ",") != "node1,node2" {
		t.Errorf("answered: %v, want node1,node2", rep.Nodes)
	}
	if len(rep.Unanswered) != 1 || rep.Unanswered[0].Node != "node3" || !strings.Contains(rep.Unanswered[0].Err, "no kubeshaper agent pod") {
		t.Errorf("unanswered: %+v, want node3 without an agent", rep.Unanswered)
	}
	byName := map[string]int{}
	for i, p := range rep.Pods {
		byName[p.Key()] = i
		if p.Node != agentenv.NodeName {
			t.Errorf("%s on %s, want %s", p.Key(), p.Node, agentenv.NodeName)
		}
	}
	get := func(key string) (nodestatus.Pod, bool) {
		i, ok := byName[key]
		if !ok {
			t.Errorf("%s missing from the status", key)
			return nodestatus.Pod{}, false
		}
		return rep.Pods[i].Pod, true
	}
	// The datapath's own rule text, per pod and direction, is what the
	// plugin shows; origins follow the merge.
	for _, c := range []struct {
		key  string
		pod  *netlab.Pod
		from [2]map[string]string
	}{
		{"shaped/pa", pa, [2]map[string]string{{"bandwidth": "Pod"}, nil}},
		{"shaped/pb", pb, [2]map[string]string{{"loss": "Service/web"}, {"bandwidth": "Pod"}}},
		{"other/pc", pc, [2]map[string]string{{"bandwidth": "Pod"}, nil}},
	} {
		p, ok := get(c.key)
		if !ok {
			continue
		}
		if len(p.Directions) != 2 {
			t.Errorf("%s: %d directions", c.key, len(p.Directions))
			continue
		}
		for i, d := range rules.Directions {
			cfg, _ := w.Rule(c.pod, d)
			if got := p.Directions[i]; got.Enforced == nil || !*got.Enforced || got.Attachment == "" {
				t.Errorf("%s %s: enforced %v (%s), attachment %q; want judged in force", c.key, d, got.Enforced, got.Reason, got.Attachment)
			}
			if got := p.Directions[i]; got.Rule != cfg.String() || got.RateBits != cfg.RateBits() || fmt.Sprint(got.From) != fmt.Sprint(c.from[i]) {
				t.Errorf("%s %s: rule %q rate %d from %v; datapath has %q rate %d; want from %v", c.key, d, got.Rule, got.RateBits, got.From, cfg.String(), cfg.RateBits(), c.from[i])
			}
		}
	}
	if p, ok := get("shaped/pb"); ok && (math.Abs(p.Directions[0].LossRatio-0.01) > 1e-6 || len(p.Sources) != 2 || p.Sources[0].Name != "web") {
		t.Errorf("pb: loss %v sources %+v; want 0.01 from Service web", p.Directions[0].LossRatio, p.Sources)
	}
	if p, ok := get("other/pc"); ok {
		if len(p.Invalid) != 1 || p.Invalid[0].Key != "kubeshaper.io/delay" || !strings.Contains(p.Invalid[0].Message, `unexpected word "sideways"`) {
			t.Errorf("pc: invalid %+v, want the delay key with the agent's text", p.Invalid)
		}
	}

	// -n and a pod name narrow it; the table names the origin.
	out, _, code := runPlugin(t, plugin, w, "status", "-n", "other")
	if code != 1 || !strings.Contains(string(out), "other      pc") || strings.Contains(string(out), "shaped") ||
		!strings.Contains(string(out), `pc (pod): invalid annotation kubeshaper.io/delay="5ms sideways"`) {
		t.Errorf("status -n other (exit %d; 1: node3 has no agent):\n%s", code, out)
	}
	out, _, _ = runPlugin(t, plugin, w, "status", "pb", "-n", w.NS, "-o", "wide")
	if !strings.Contains(string(out), "loss=Service/web") || strings.Contains(string(out), " pa ") {
		t.Errorf("status pb -o wide:\n%s", out)
	}
	out, _, code = runPlugin(t, plugin, w, "explain", "pb", "-n", w.NS)
	for _, want := range []string{"Service web", "provides: egress loss", "Pod pb", "provides: ingress bandwidth", "In effect on node1"} {
		if code != 0 || !strings.Contains(string(out), want) {
			t.Errorf("explain pb (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
	w.Eventually(10*time.Second, "the InvalidAnnotation Event in explain", func() (bool, string) {
		out, _, _ = runPlugin(t, plugin, w, "explain", "pc", "-n", "other")
		return strings.Contains(string(out), `Warning InvalidAnnotation`) && strings.Contains(string(out), "Invalid (left out"), string(out)
	})

	// RBAC: a user given exactly what the chart's rbac.statusReaders
	// grants (kubeshaper-status-reader: get pods/proxy, and listing the
	// agents' pods, both in the agents' namespace only) sees every pod;
	// a user without it is refused.
	applyChartRBAC(t, w)
	out, stderr, code := runPlugin(t, plugin, w, "status", "-A", "-o", "json", "--as", "ops")
	var asOps report
	if err := json.Unmarshal(out, &asOps); err != nil || code != 0 || len(asOps.Pods) != len(rep.Pods) {
		t.Errorf("status -A --as ops (the chart's status reader): exit %d, %d pods (want %d), stderr %q", code, len(asOps.Pods), len(rep.Pods), stderr)
	}
	_, stderr, code = runPlugin(t, plugin, w, "status", "-A", "--as", "nobody")
	if code != 2 || !strings.Contains(stderr, "forbidden") {
		t.Errorf("status -A --as nobody: exit %d, stderr %q; want 2 and forbidden", code, stderr)
	}

	// node2's agent stops answering (SIGSTOP: its socket still accepts, it
	// never replies): the plugin answers within the per-node timeout,
	// names node2, and still shows node1's pods.
	if err := ag2.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag2.Cmd.Process.Signal(syscall.SIGCONT) })
	const timeout = 2 * time.Second
	start := time.Now()
	out, stderr, code = runPlugin(t, plugin, w, "status", "-A", "-o", "json", "--timeout", timeout.String())
	took := time.Since(start)
	rep = report{}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var hung string
	for _, u := range rep.Unanswered {
		if u.Node == "node2" {
			hung = u.Err
		}
	}
	t.Logf("status -A with node2's agent stopped: %v (timeout %v), exit %d, stderr %q", took.Round(time.Millisecond), timeout, code, stderr)
	// The bound: the timeout plus the plugin's start-up and its two list
	// calls, on a loaded 2-core machine.
	if code != 1 || !strings.Contains(hung, "no answer within 2s") || took > timeout+2*time.Second || len(rep.Pods) != 3 ||
		!strings.Contains(stderr, "node2") {
		t.Errorf("took %v, exit %d, node2: %q, %d pods, stderr %q; want within %v, exit 1, node2 named, node1's 3 pods", took, code, hung, len(rep.Pods), stderr, timeout+2*time.Second)
	}
}

// dummyAddrs adds a link (ksop prefix) with two addresses the pod
// proxy accepts, removed in t.Cleanup.
func dummyAddrs(t *testing.T) (net.IP, net.IP) {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := fmt.Sprintf("ksopd%x", b)
	// A veth pair (this kernel has no dummy driver); the addresses go on
	// one end, which is enough for them to be local.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	ips := []net.IP{net.IPv4(198, 18, b[0], 1).To4(), net.IPv4(198, 18, b[0], 2).To4()}
	for _, ip := range ips {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{name, name + "p"} {
		if l, err := netlink.LinkByName(n); err != nil {
			t.Fatal(err)
		} else if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return ips[0], ips[1]
}

// agentPod is the Pod object of an agent, as the DaemonSet makes it: the
// plugin finds it by label and reaches its "metrics" port through the proxy.
func agentPod(t *testing.T, w *agentenv.World, name, node string, ip net.IP, port int) {
	t.Helper()
	ctx := context.Background()
	zero := int64(0)
	pods := w.CS.CoreV1().Pods(agentNS)
	p, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "kubeshaper-agent"}},
		// hostNetwork, as the DaemonSet's: the agents leave it alone.
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true, TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{
			Name: "agent", Image: "kubeshaper/agent:test",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(port)}, {Name: "health", ContainerPort: 1}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-kubeshaper")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/kubeshaper/kubeshaper/cmd/kubectl-kubeshaper").CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v\n%s", err, out)
	}
	return bin
}

func runPlugin(t *testing.T, bin string, w *agentenv.World, args ...string) (stdout []byte, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, append(args, "--kubeconfig", w.Env.KubeconfigPath())...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errb.String(), code
}

// applyChartRBAC applies the chart's RBAC with rbac.statusReaders = user
// "ops" (helm from tools/helmbin, kubectl from the Kubernetes cache).
func applyChartRBAC(t *testing.T, w *agentenv.World) {
	t.Helper()
	repo, err := kubeenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	helm, err := exec.Command(filepath.Join(repo, "tools", "helmbin", "build.sh")).Output()
	if err != nil {
		t.Fatalf("tools/helmbin/build.sh: %v", err)
	}
	yaml, err := exec.Command(strings.TrimSpace(string(helm)), "template", "kubeshaper", filepath.Join(repo, "manifests", "helm", "kubeshaper"),
		"--namespace", agentNS, "--show-only", "templates/rbac.yaml",
		"--set", "rbac.statusReaders[0].kind=User", "--set", "rbac.statusReaders[0].name=ops",
		"--set", "rbac.statusReaders[0].apiGroup=rbac.authorization.k8s.io").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	f := filepath.Join(t.TempDir(), "rbac.yaml")
	if err := os.WriteFile(f, yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl, err := kubeenv.ComponentBinary(t.Context(), "kubectl", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(kubectl, "--kubeconfig", w.Env.KubeconfigPath(), "apply", "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}
