// Package agentenv runs kubeshaper-agent end to end for tests: a real
// kube-apiserver + etcd (tests/kubeenv), pods that are real network
// namespaces behind veths in a "node" netns (tests/netlab, or the faster
// AddPod here), a private pin directory on the bpffs, and the agent as its
// own process, as the DaemonSet runs it, with --node-netns and --bpffs.
//
//	func TestMain(m *testing.M) { agentenv.Main(m) }
//
//	w := agentenv.New(t, "ag")
//	p := w.AddPod("a")
//	w.Pod(p, "pa", nil, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"})
//	ag := w.StartAgent(agentenv.Options{})
//	w.WaitRate(p, rules.Egress, 10e6)
package agentenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// NodeName is the Node every pod of a World is bound to.
const NodeName = "node1"

var (
	buildOnce sync.Once
	buildDir  string
	agentBin  string
	buildErr  error
)

// Main is a TestMain: it skips the package unless run as root (BPF,
// network namespaces) and removes the agent binary built by Binary.
func Main(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("skipping: needs root")
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Binary builds cmd/kubeshaper-agent once per test process and returns
// its path (lazily: a fuzz run or a skipped test builds nothing).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "ksagent")
		if buildErr != nil {
			return
		}
		agentBin = filepath.Join(buildDir, "kubeshaper-agent")
		out, err := exec.Command("go", "build", "-o", agentBin, "github.com/kubeshaper/kubeshaper/cmd/kubeshaper-agent").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building the agent: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return agentBin
}

// World is one control plane, one node netns with pods, one pin dir.
type World struct {
	T      testing.TB
	Env    *kubeenv.Env
	CS     kubernetes.Interface
	Lab    *netlab.Lab
	PinDir string
	NS     string // the namespace pods are created in

	ips   *ipBlock // addresses of AddPod's pods
	podMu sync.Mutex
	seq   int
	vseq  int
}

// New starts a control plane, creates Node NodeName and namespace
// "shaped", a node netns (netlab, tag names the test package in link
// names) and a pin directory under the bpffs; all removed in t.Cleanup.
func New(t testing.TB, tag string) *World {
	t.Helper()
	return NewOn(t, tag, kubeenv.Start(t))
}

// NewOn is New on a control plane already running (kubeenv.Attach: one
// on the host, the World in a qemu guest).
func NewOn(t testing.TB, tag string, env *kubeenv.Env) *World {
	t.Helper()
	w := &World{T: t, Env: env, NS: "shaped"}
	w.Lab = netlab.New(t, tag)
	w.CS = w.Env.Clientset()
	w.PinDir = netlab.PinDir(t, "ksag")
	t.Cleanup(w.removeFastPods) // before netlab removes the node
	ctx := context.Background()
	if _, err := w.Env.CreateNode(ctx, NodeName); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Env.CreateNamespace(ctx, w.NS); err != nil {
		t.Fatal(err)
	}
	return w
}

// NodeNetns is the path of the node netns, as --node-netns takes it.
func (w *World) NodeNetns() string { return "/var/run/netns/" + w.Lab.Node }

// Pod creates a Pod object in w.NS whose IP is that of a real netns pod.
func (w *World) Pod(p *netlab.Pod, name string, labels, ann map[string]string) {
	w.T.Helper()
	w.PodIn(w.NS, p, name, labels, ann)
}

// PodIn is Pod in another namespace.
func (w *World) PodIn(ns string, p *netlab.Pod, name string, labels, ann map[string]string) {
	w.T.Helper()
	if _, err := w.Env.CreatePodWithIPs(context.Background(), ns, name, NodeName, []string{p.IP.String()}, ann, labels); err != nil {
		w.T.Fatal(err)
	}
}

// DeletePod deletes a Pod object of w.NS (now: grace period 0).
func (w *World) DeletePod(name string) {
	w.T.Helper()
	if err := w.CS.CoreV1().Pods(w.NS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		w.T.Fatal(err)
	}
}

// Annotate merge-patches the annotations of a pod or service of w.NS; a
// nil value removes the key.
func (w *World) Annotate(kind, name string, ann map[string]any) {
	w.T.Helper()
	if err := w.TryAnnotate(w.NS, kind, name, ann); err != nil {
		w.T.Fatal(err)
	}
}

// TryAnnotate is Annotate in namespace ns, returning the API's error.
func (w *World) TryAnnotate(ns, kind, name string, ann map[string]any) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":%s}}`, JSONOf(ann))
	ctx := context.Background()
	var err error
	switch kind {
	case "pod":
		_, err = w.CS.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	case "service":
		_, err = w.CS.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	default:
		err = fmt.Errorf("annotate: unknown kind %q", kind)
	}
	return err
}

// Rule reads what the datapath holds for a pod's host veth and direction.
func (w *World) Rule(p *netlab.Pod, dir rules.Direction) (datapath.Config, bool) {
	w.T.Helper()
	return w.RuleAt(w.Ifindex(p), dir)
}

// RuleAt reads the rule of a host ifindex and direction (none if the map
// is not pinned yet).
func (w *World) RuleAt(ifindex int, dir rules.Direction) (datapath.Config, bool) {
	w.T.Helper()
	m, err := w.Maps()
	if err != nil {
		w.T.Fatal(err)
	}
	defer m.Close()
	c, ok, err := m.Rule(ifindex, dir)
	if err != nil {
		w.T.Fatal(err)
	}
	return c, ok
}

// Ifindex is a pod's host veth's index in the node netns.
func (w *World) Ifindex(p *netlab.Pod) int {
	w.T.Helper()
	idx, err := w.TryIfindex(p)
	if err != nil {
		w.T.Fatal(err)
	}
	return idx
}

// TryIfindex is Ifindex returning an error when the veth is gone.
func (w *World) TryIfindex(p *netlab.Pod) (int, error) {
	idx := 0
	err := podnet.Do(w.NodeNetns(), func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err == nil {
			idx = l.Index
		}
		return err
	})
	return idx, err
}

// Filters counts kubeshaper's filters on a pod's host veth (0 when the
// veth is gone).
func (w *World) Filters(p *netlab.Pod) int {
	w.T.Helper()
	n := 0
	podnet.Do(w.NodeNetns(), func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err != nil {
			return err
		}
		fl, err := attach.ListFilters(l.Index)
		n = len(fl)
		return err
	})
	return n
}

// AllOurFilters lists kubeshaper's filters on every interface of the node
// netns, by ifindex.
func (w *World) AllOurFilters() map[int][]attach.Filter {
	w.T.Helper()
	var ours map[int][]attach.Filter
	err := podnet.Do(w.NodeNetns(), func() (err error) { ours, err = attach.ListAllOurs(); return err })
	if err != nil {
		w.T.Fatal(err)
	}
	return ours
}

// Entries counts the keys of the rule and counter maps (as the agent's
// leftover collection sees them).
func (w *World) Entries() int {
	w.T.Helper()
	m, err := w.Maps()
	if err != nil {
		w.T.Fatal(err)
	}
	defer m.Close()
	keys, err := m.Keys()
	if err != nil {
		w.T.Fatal(err)
	}
	return len(keys)
}

// Eventually polls cond every 50 ms until it holds, failing the test
// after timeout with cond's last message.
func (w *World) Eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	w.T.Helper()
	if _, err := Poll(timeout, 50*time.Millisecond, cond); err != nil {
		w.T.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll calls cond every interval until it holds or timeout passes; it
// returns how long that took, or an error with cond's last message.
func Poll(timeout, interval time.Duration, cond func() (bool, string)) (time.Duration, error) {
	start := time.Now()
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return time.Since(start), nil
		}
		last = msg
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("timed out after %v (last: %s)", timeout, last)
		}
		time.Sleep(interval)
	}
}

// WaitRate waits until the pod's rule for dir has the given rate.
func (w *World) WaitRate(p *netlab.Pod, dir rules.Direction, bits uint64) {
	w.T.Helper()
	w.Eventually(10*time.Second, fmt.Sprintf("%s %s rate %d", p.Name, dir, bits), func() (bool, string) {
		c, ok := w.Rule(p, dir)
		return ok && c.RateBits() == bits, c.String()
	})
}

// WaitLoss waits until the pod's rule for dir has the given loss ratio.
func (w *World) WaitLoss(p *netlab.Pod, dir rules.Direction, ratio float64) {
	w.T.Helper()
	w.Eventually(10*time.Second, fmt.Sprintf("%s %s loss %g", p.Name, dir, ratio), func() (bool, string) {
		c, ok := w.Rule(p, dir)
		got := c.LossProbability()
		return ok && got > ratio-1e-6 && got < ratio+1e-6, c.String()
	})
}

// Events lists the Events of w.NS on the object named obj with reason.
func (w *World) Events(obj, reason string) []corev1.Event {
	w.T.Helper()
	return w.EventsIn(w.NS, obj, reason)
}

// EventsIn is Events in namespace ns; an empty reason matches any.
func (w *World) EventsIn(ns, obj, reason string) []corev1.Event {
	w.T.Helper()
	list, err := w.CS.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		w.T.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == obj && (reason == "" || e.Reason == reason) {
			out = append(out, e)
		}
	}
	return out
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// JSONOf renders annotations for a merge patch (nil removes a key).
func JSONOf(m map[string]any) string {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}
