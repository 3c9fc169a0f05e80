// Package realnode drives the local single-node cluster that
// tools/cluster/up.sh brings up (kubelet + containerd + CNI bridge on this
// machine): it creates pods of the traffic image, runs the traffic tool in
// them with `kubectl exec`, reads the agent's `kubeshaper status --json`,
// and finds a pod's host-side veth. tests/e2e and tools/demo share it.
//
// It must run as root on the node itself (it reads the node's netns and tc
// filters directly).
package realnode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/bounds"
)

// Names fixed by tools/cluster and manifests/.
const (
	AgentNamespace = "kubeshaper-system"
	AgentDaemonSet = "kubeshaper-agent"
	AgentLabel     = "app.kubernetes.io/name=kubeshaper-agent"
	Bridge         = "ksbr0"
	TCPPort        = 5001
)

// Cluster is a handle on the running local cluster.
type Cluster struct {
	Repo         string
	Kubeconfig   string
	KubectlPath  string
	Client       kubernetes.Interface
	TrafficImage string
}

// RepoRoot finds the repository root from this source file's location, or
// from $KUBESHAPER_REPO.
func RepoRoot() string {
	if r := os.Getenv("KUBESHAPER_REPO"); r != "" {
		return r
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// KubeconfigPath is $KUBESHAPER_KUBECONFIG or <repo>/.cluster/kubeconfig.
func KubeconfigPath(repo string) string {
	if p := os.Getenv("KUBESHAPER_KUBECONFIG"); p != "" {
		return p
	}
	return filepath.Join(repo, ".cluster", "kubeconfig")
}

// Open connects to the cluster whose admin kubeconfig tools/cluster/up.sh
// wrote.
func Open(repo string) (*Cluster, error) {
	kc := KubeconfigPath(repo)
	if _, err := os.Stat(kc); err != nil {
		return nil, fmt.Errorf("no local cluster (%v): run make cluster-up", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ver, err := os.ReadFile(filepath.Join(repo, "tools", "k8sbin", "VERSION"))
	if err != nil {
		return nil, err
	}
	cacheRoot := os.Getenv("KUBESHAPER_K8S_CACHE")
	if cacheRoot == "" {
		cacheRoot = filepath.Join(repo, ".cache", "k8s")
	}
	c := &Cluster{
		Repo: repo, Kubeconfig: kc, Client: cs,
		KubectlPath:  filepath.Join(cacheRoot, strings.TrimSpace(string(ver)), "bin", "kubectl"),
		TrafficImage: "kubeshaper/traffic:dev",
	}
	clusterDir := filepath.Dir(kc)
	if b, err := os.ReadFile(filepath.Join(clusterDir, "images", "traffic.ref")); err == nil {
		c.TrafficImage = strings.TrimSpace(string(b))
	}
	return c, nil
}

// Kubectl runs kubectl with the admin kubeconfig; stdout on success, an
// error carrying stderr otherwise.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.KubectlPath, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// CreateNamespace creates ns (and waits for its default ServiceAccount).
func (c *Cluster) CreateNamespace(ctx context.Context, ns string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return Poll(ctx, 30*time.Second, func() (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// DeleteNamespace deletes ns and waits until it is gone.
func (c *Cluster) DeleteNamespace(ctx context.Context, ns string, wait time.Duration) error {
	err := c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return Poll(ctx, wait, func() (bool, error) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// CreateTrafficPod starts a pod of the traffic image (`traffic serve`).
func (c *Cluster) CreateTrafficPod(ctx context.Context, ns, name string, labels, annotations map[string]string) error {
	grace := int64(2)
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			DNSPolicy:                     corev1.DNSDefault, // the local cluster runs no DNS
			Containers: []corev1.Container{{
				Name:            "traffic",
				Image:           c.TrafficImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            []string{"serve"},
				Ports: []corev1.ContainerPort{
					{Name: "tcp", ContainerPort: TCPPort, Protocol: corev1.ProtocolTCP},
					{Name: "udp", ContainerPort: TCPPort + 1, Protocol: corev1.ProtocolUDP},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstrPort(TCPPort)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
	_, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	return err
}

// WaitPodReady waits for the pod to be Ready with an IP.
func (c *Cluster) WaitPodReady(ctx context.Context, ns, name string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := Poll(ctx, timeout, func() (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		if p.Status.PodIP == "" {
			return false, nil
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil && pod != nil {
		return pod, fmt.Errorf("pod %s/%s not Ready (phase %s): %w", ns, name, pod.Status.Phase, err)
	}
	return pod, err
}

// Annotate sets (value != "") or removes (value == "") annotations with a
// merge patch.
func (c *Cluster) Annotate(ctx context.Context, kind, ns, name string, kv map[string]string) error {
	ann := map[string]any{}
	for k, v := range kv {
		if v == "" {
			ann[k] = nil
		} else {
			ann[k] = v
		}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	var err error
	switch kind {
	case "pod":
		_, err = c.Client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	case "service":
		_, err = c.Client.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	default:
		err = fmt.Errorf("annotate: unknown kind %q", kind)
	}
	return err
}

// TCPResult is `traffic tcp`'s output: measured on the receiving side.
type TCPResult struct {
	Direction string    `json:"direction"`
	Bytes     int64     `json:"bytes"`
	Seconds   float64   `json:"seconds"`
	BitsPerS  float64   `json:"bits_per_second"`
	BinMS     int       `json:"bin_ms"`
	Bins      []float64 `json:"bins_bits_per_second"`
}

// UDPResult is `traffic udp`'s output.
type UDPResult struct {
	Sent     uint64  `json:"sent"`
	Received uint64  `json:"received"`
	Lost     uint64  `json:"lost"`
	Loss     float64 `json:"loss"`
	Seconds  float64 `json:"seconds"`
	Size     int     `json:"size"`
}

// TCP streams from pod `from` to ip for d (reverse: ip streams to `from`).
func (c *Cluster) TCP(ctx context.Context, ns, from, ip string, d time.Duration, reverse bool) (TCPResult, error) {
	args := []string{"-n", ns, "exec", from, "--", "traffic", "tcp", "--to", ip, "--duration", d.String()}
	if reverse {
		args = append(args, "--reverse")
	}
	var r TCPResult
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("traffic tcp output %q: %w", out, err)
	}
	return r, nil
}

// UDP sends count datagrams at pps from pod `from` to ip and reports loss.
func (c *Cluster) UDP(ctx context.Context, ns, from, ip string, count, pps int) (UDPResult, error) {
	var r UDPResult
	out, err := c.Kubectl(ctx, "-n", ns, "exec", from, "--", "traffic", "udp", "--to", ip,
		"--count", fmt.Sprint(count), "--pps", fmt.Sprint(pps))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("traffic udp output %q: %w", out, err)
	}
	return r, nil
}

// AgentPod returns the running, non-terminating agent pod on the node.
func (c *Cluster) AgentPod(ctx context.Context) (*corev1.Pod, error) {
	l, err := c.Client.CoreV1().Pods(AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: AgentLabel})
	if err != nil {
		return nil, err
	}
	for i := range l.Items {
		p := &l.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			return p, nil
		}
	}
	return nil, errors.New("no running kubeshaper agent pod")
}

// IfaceStatus mirrors one entry of `kubeshaper status --json`.
type IfaceStatus struct {
	Interface  string `json:"interface"`
	Ifindex    int    `json:"ifindex"`
	Filters    []string
	Directions []struct {
		Direction string  `json:"direction"`
		Rule      string  `json:"rule"`
		RateBits  uint64  `json:"rate_bits"`
		LossRatio float64 `json:"loss_ratio"`
		Packets   uint64  `json:"packets"`
		Bytes     uint64  `json:"bytes"`
		Drops     map[string]struct {
			Packets uint64 `json:"packets"`
			Bytes   uint64 `json:"bytes"`
		} `json:"drops"`
	} `json:"directions"`
}

// AgentStatus runs `kubeshaper status --json` inside the agent pod: what
// the pinned maps of the node hold.
func (c *Cluster) AgentStatus(ctx context.Context) ([]IfaceStatus, error) {
	p, err := c.AgentPod(ctx)
	if err != nil {
		return nil, err
	}
	out, err := c.Kubectl(ctx, "-n", AgentNamespace, "exec", p.Name, "--", "kubeshaper", "status", "--json")
	if err != nil {
		return nil, err
	}
	var st []IfaceStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("status output %q: %w", out, err)
	}
	return st, nil
}

// Find returns the status entry of a host interface (nil if none).
func Find(st []IfaceStatus, iface string) *IfaceStatus {
	for i := range st {
		if st[i].Interface == iface {
			return &st[i]
		}
	}
	return nil
}

// HostVeth resolves a pod's host-side veth on this node from its IP, the
// way the agent does (netns by IP, then the veth peer).
func HostVeth(podIP string) (podnet.HostVeth, error) {
	ip := net.ParseIP(podIP)
	if ip == nil {
		return podnet.HostVeth{}, fmt.Errorf("bad pod IP %q", podIP)
	}
	ns, err := podnet.NewFinder().NetnsFor(ip)
	if err != nil {
		return podnet.HostVeth{}, err
	}
	return podnet.HostPeer(ns, ip)
}

// TCFilters is `tc filter show dev DEV HOOK` (hook: ingress or egress).
func TCFilters(ctx context.Context, dev, hook string) (string, error) {
	out, err := exec.CommandContext(ctx, "tc", "filter", "show", "dev", dev, hook).CombinedOutput()
	return string(out), err
}

// BridgePorts lists the interfaces enslaved to the cluster's CNI bridge.
func BridgePorts(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "master", Bridge).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip link show master %s: %v: %s", Bridge, err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) >= 2 {
			names = append(names, strings.SplitN(f[1], "@", 2)[0])
		}
	}
	return names, nil
}

// Poll calls fn every 250 ms until it returns true, an error, or timeout.
func Poll(ctx context.Context, timeout time.Duration, fn func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := fn()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v", timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// LossBounds is the interval of the number of losses among n packets each
// lost with probability p, sized for the whole CI run (tests/bounds).
func LossBounds(n uint64, p float64) (lo, hi float64) {
	l, h := bounds.Binomial(int64(n), p)
	return float64(l), float64(h)
}

func intstrPort(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }
