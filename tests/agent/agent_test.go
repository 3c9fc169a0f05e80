// Package agent tests kubeshaper-agent end to end against a real
// kube-apiserver + etcd (tests/kubeenv), with pods that are real network
// namespaces behind veths in a "node" netns (tests/netlab). The agent runs
// as its own process, as the DaemonSet runs it.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

const nodeName = "node1"

var agentBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("skipping: needs root")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "ksagent")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "kubeshaper-agent")
	if out, err := exec.Command("go", "build", "-o", agentBin, "github.com/kubeshaper/kubeshaper/cmd/kubeshaper-agent").CombinedOutput(); err != nil {
		fmt.Printf("building the agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// world is one control plane, one node netns with pods, one pin dir.
type world struct {
	t      *testing.T
	env    *kubeenv.Env
	cs     kubernetes.Interface
	lab    *netlab.Lab
	pinDir string
	ns     string
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, env: kubeenv.Start(t), lab: netlab.New(t, "ag"), ns: "shaped"}
	w.cs = w.env.Clientset()
	b := make([]byte, 4)
	rand.Read(b)
	w.pinDir = datapath.DefaultBPFFS + "/kstest-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		datapath.RemovePins(w.pinDir)
		os.Remove(w.pinDir)
	})
	ctx := context.Background()
	if _, err := w.env.CreateNode(ctx, nodeName); err != nil {
		t.Fatal(err)
	}
	if _, err := w.env.CreateNamespace(ctx, w.ns); err != nil {
		t.Fatal(err)
	}
	return w
}

// agent is a running kubeshaper-agent process.
type agent struct {
	cmd    *exec.Cmd
	health string
	log    *os.File
}

func (w *world) startAgent(cleanupOnExit bool) *agent {
	w.t.Helper()
	port := freePort(w.t)
	logf, err := os.CreateTemp("", "ksagent-log")
	if err != nil {
		w.t.Fatal(err)
	}
	a := &agent{health: fmt.Sprintf("127.0.0.1:%d", port), log: logf}
	a.cmd = exec.Command(agentBin,
		"--kubeconfig", w.env.KubeconfigPath(),
		"--node-name", nodeName,
		"--node-netns", "/var/run/netns/"+w.lab.Node,
		"--bpffs", w.pinDir,
		"--metrics-addr", "",
		"--health-addr", a.health,
		"--resync", "3s",
		"--log-level", "debug",
		fmt.Sprintf("--cleanup-on-exit=%v", cleanupOnExit))
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			a.cmd.Process.Kill()
			a.cmd.Wait()
		}
		if w.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			w.t.Logf("agent log:\n%s", tail(string(b), 40))
		}
		os.Remove(logf.Name())
	})
	w.eventually(30*time.Second, "agent ready", func() (bool, string) {
		resp, err := http.Get("http://" + a.health + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return a
}

// stop sends SIGTERM and waits for the agent to exit.
func (a *agent) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not exit within 20 s of SIGTERM")
	}
	return time.Since(start)
}

// pod creates a Pod object whose IP is that of a real netns pod.
func (w *world) pod(p *netlab.Pod, name string, labels, ann map[string]string) {
	w.t.Helper()
	if _, err := w.env.CreatePodWithIPs(context.Background(), w.ns, name, nodeName, []string{p.IP.String()}, ann, labels); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) annotate(kind, name string, ann map[string]any) {
	w.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":%s}}`, jsonOf(ann))
	var err error
	ctx := context.Background()
	switch kind {
	case "pod":
		_, err = w.cs.CoreV1().Pods(w.ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	case "service":
		_, err = w.cs.CoreV1().Services(w.ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	}
	if err != nil {
		w.t.Fatal(err)
	}
}

// rule reads what the datapath holds for a pod's host veth and direction.
func (w *world) rule(p *netlab.Pod, dir rules.Direction) (datapath.Config, bool) {
	w.t.Helper()
	dp, err := datapath.Open(w.pinDir)
	if err != nil {
		w.t.Fatal(err)
	}
	defer dp.Close()
	c, ok, err := dp.Lookup(datapath.KeyOf(w.ifindex(p), dir))
	if err != nil {
		w.t.Fatal(err)
	}
	return c, ok
}

func (w *world) ifindex(p *netlab.Pod) int {
	w.t.Helper()
	idx := 0
	err := podnet.Do("/var/run/netns/"+w.lab.Node, func() error {
		l, err := net.InterfaceByName(p.HostVeth)
		if err == nil {
			idx = l.Index
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return idx
}

func (w *world) filters(p *netlab.Pod) int {
	w.t.Helper()
	n := 0
	podnet.Do("/var/run/netns/"+w.lab.Node, func() error {
		fl, err := attach.ListFilters(w.ifindex(p))
		n = len(fl)
		return err
	})
	return n
}

// entries counts every key in the pinned maps.
func (w *world) entries() int {
	w.t.Helper()
	dp, err := datapath.Open(w.pinDir)
	if err != nil {
		w.t.Fatal(err)
	}
	defer dp.Close()
	keys, err := dp.Keys()
	if err != nil {
		w.t.Fatal(err)
	}
	return len(keys)
}

func (w *world) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, last)
}

func (w *world) waitRate(p *netlab.Pod, dir rules.Direction, bits uint64) {
	w.t.Helper()
	w.eventually(10*time.Second, fmt.Sprintf("%s %s rate %d", p.Name, dir, bits), func() (bool, string) {
		c, ok := w.rule(p, dir)
		return ok && c.RateBits() == bits, c.String()
	})
}

func (w *world) waitLoss(p *netlab.Pod, dir rules.Direction, ratio float64) {
	w.t.Helper()
	w.eventually(10*time.Second, fmt.Sprintf("%s %s loss %g", p.Name, dir, ratio), func() (bool, string) {
		c, ok := w.rule(p, dir)
		got := c.LossProbability()
		return ok && got > ratio-1e-6 && got < ratio+1e-6, c.String()
	})
}

func (w *world) events(obj, reason string) []corev1.Event {
	w.t.Helper()
	list, err := w.cs.CoreV1().Events(w.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == obj && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func jsonOf(m map[string]any) string {
	var parts []string
	for k, v := range m {
		if v == nil {
			parts = append(parts, fmt.Sprintf("%q:null", k))
		} else {
			parts = append(parts, fmt.Sprintf("%q:%q", k, v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}
