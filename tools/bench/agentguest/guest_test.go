package agentguest

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// The node side's settings, from the host side (the guest gets the
// KUBESHAPER_* environment of tools/kernels).
const (
	envNode       = "KUBESHAPER_AGENTGUEST_NODE"       // directory of the agent binary and kubeconfigs
	envKubeconfig = "KUBESHAPER_AGENTGUEST_KUBECONFIG" // the kubeconfig the node side uses
	envNet        = "KUBESHAPER_AGENTGUEST_NET"        // configure eth0 (a guest with the forward)
	envLimit      = "KUBESHAPER_AGENTGUEST_LIMIT"      // the DaemonSet's memory limit, bytes
	envMemLimit   = "KUBESHAPER_AGENTGUEST_GOMEMLIMIT" // the DaemonSet's GOMEMLIMIT
	envPods       = "KUBESHAPER_AGENTGUEST_PODS"
	resultMarker  = "AGENTGUEST-RESULT "
)

// guestAPIServer is where a guest reaches the host's apiserver
// (tools/kernels' forward).
const guestAPIServer = "https://10.0.2.100:6443"

// TestAgentInGuest: on the host, starts etcd + kube-apiserver and runs the
// node side (nodeSide) either as a process on the host
// (KUBESHAPER_AGENTGUEST_CPUS=host, the default: everything but the
// guest's network) or in a qemu guest with that many CPUs, then writes
// its figures into docs/bench/agent-guest.json (a section per CPU count).
func TestAgentInGuest(t *testing.T) {
	if os.Getenv(envNode) != "" {
		nodeSide(t)
		return
	}
	if !bench.On() {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench-agent-guest)")
	}
	cpus := os.Getenv("KUBESHAPER_AGENTGUEST_CPUS")
	if cpus == "" {
		cpus = "host"
	}
	root, err := kubeenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	limit, gomem, err := manifestMemory(filepath.Join(root, "manifests", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Not under /tmp: a guest mounts its own /tmp over the host's.
	if err := os.MkdirAll(filepath.Join(root, ".cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Join(root, ".cache"), "agentguest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	agent := filepath.Join(dir, "kubeshaper-agent")
	code := gitDescribe(root)
	if bin := os.Getenv("KUBESHAPER_AGENTGUEST_BIN"); bin != "" {
		// Another build of the agent (make bench-agent-guest BASE=<commit>):
		// the same harness measures the code before a change.
		b, err := os.ReadFile(bin)
		if err == nil {
			err = os.WriteFile(agent, b, 0o755)
		}
		if err != nil {
			t.Fatalf("KUBESHAPER_AGENTGUEST_BIN: %v", err)
		}
		code = os.Getenv("KUBESHAPER_AGENTGUEST_BIN_CODE")
	} else {
		build := exec.Command("go", "build", "-o", agent, "./cmd/kubeshaper-agent")
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the agent: %v\n%s", err, out)
		}
	}
	env := kubeenv.Start(t)
	u, err := url.Parse(env.Host())
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pods := 250
	if s := os.Getenv(envPods); s != "" {
		if pods, err = strconv.Atoi(s); err != nil {
			t.Fatalf("%s=%q: %v", envPods, s, err)
		}
	}
	vars := []string{envNode + "=" + dir, envLimit + "=" + strconv.FormatInt(limit, 10),
		envMemLimit + "=" + gomem, envPods + "=" + strconv.Itoa(pods)}
	testArgs := []string{"-test.run=^TestAgentInGuest$", "-test.v", "-test.timeout=60m"}
	var cmd *exec.Cmd
	accel := "none (on the host)"
	if cpus == "host" {
		// Another name of the apiserver than its own, as the guest's: the
		// same certificate check (tls-server-name).
		kc := filepath.Join(dir, "kubeconfig-host")
		if err := env.WriteKubeconfigFor(kc, strings.Replace(env.Host(), "127.0.0.1", "localhost", 1)); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(self, testArgs...)
		cmd.Env = append(os.Environ(), append(vars, envKubeconfig+"="+kc)...)
	} else {
		n, err := strconv.Atoi(cpus)
		if err != nil {
			t.Fatalf("KUBESHAPER_AGENTGUEST_CPUS=%q: want host or a CPU count", cpus)
		}
		kc := filepath.Join(dir, "kubeconfig-guest")
		if err := env.WriteKubeconfigFor(kc, guestAPIServer); err != nil {
			t.Fatal(err)
		}
		// A kernels tool of this tree's own (not the shared cache's).
		kernels := filepath.Join(dir, "kernels")
		b := exec.Command("go", "build", "-o", kernels, "./tools/kernels")
		b.Dir, b.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := b.CombinedOutput(); err != nil {
			t.Fatalf("building tools/kernels: %v\n%s", err, out)
		}
		kernel := os.Getenv("KERNEL")
		if kernel == "" {
			kernel = "6.18"
		}
		cmd = exec.Command(kernels, append([]string{"exec", "-kernel", kernel, self}, testArgs...)...)
		cmd.Env = append(os.Environ(), append(vars,
			envKubeconfig+"="+kc, envNet+"=1",
			"KERNELS_APISERVER=127.0.0.1:"+u.Port(),
			// As tools/membench/run.sh sizes its guests.
			// KUBESHAPER_AGENTGUEST_QEMU_ARGS: more (a later -cpu wins).
			strings.TrimSpace(fmt.Sprintf("QEMU_EXTRA_ARGS=-smp %d -m %d %s", n, 2048+16*n, os.Getenv("KUBESHAPER_AGENTGUEST_QEMU_ARGS"))))...)
		accel = cmp.Or(os.Getenv("QEMU_ACCEL"), "tcg")
	}
	load0 := loadAvg()
	start := time.Now()
	res := runNode(t, cmd)
	res["how"] = map[string]any{
		"where":      cpus,
		"accel":      accel,
		"qemu_args":  os.Getenv("KUBESHAPER_AGENTGUEST_QEMU_ARGS"),
		"apiserver":  "kube-apiserver + etcd on the host (tests/kubeenv); the guest reaches it through qemu user-mode networking, restrict=on, one guestfwd",
		"limit_from": "manifests/daemonset.yaml (memory limit, GOMEMLIMIT)",
		"gomaxprocs": "unset in the environment, no CPU limit (as the DaemonSet): the agent's own choice (cmd/kubeshaper-agent/runtime.go), go_runtime.go_sched_gomaxprocs_threads",
		"seconds":    time.Since(start).Seconds(),
		"load_start": load0,
		"load_end":   loadAvg(),
	}
	section := "host"
	if cpus != "host" {
		section = "guest-" + cpus
	}
	// A variant (KUBESHAPER_AGENTGUEST_ENV: the agent's extra environment)
	// gets a section of its own.
	if tag := os.Getenv("KUBESHAPER_AGENTGUEST_TAG"); tag != "" {
		section += "-" + tag
	}
	res["extra_env"] = os.Getenv("KUBESHAPER_AGENTGUEST_ENV")
	res["scrape"] = os.Getenv("KUBESHAPER_AGENTGUEST_SCRAPE")
	res["code"] = code
	bench.Write(t, "docs/bench/agent-guest.json", section, res)
}

// runNode runs the node side and returns its result line, its output
// echoed to the test log.
func runNode(t *testing.T, cmd *exec.Cmd) map[string]any {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		t.Log(l)
		if _, js, ok := strings.Cut(l, resultMarker); ok {
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				t.Errorf("result line: %v", err)
			}
		}
	}
	werr := cmd.Wait()
	if werr != nil || res == nil {
		t.Fatalf("node side: %v, result %v", werr, res != nil)
	}
	return res
}

// manifestMemory reads the agent container's memory limit (bytes) and
// GOMEMLIMIT from the DaemonSet, which is what they measure.
func manifestMemory(path string) (int64, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", fmt.Errorf("reading the DaemonSet's memory limit: %w", err)
	}
	m := regexp.MustCompile(`(?s)limits:\s*\n\s*memory:\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		return 0, "", fmt.Errorf("%s has no memory limit", path)
	}
	q, err := resource.ParseQuantity(string(m[1]))
	if err != nil {
		return 0, "", fmt.Errorf("%s: memory limit %q: %w", path, m[1], err)
	}
	g := regexp.MustCompile(`name: GOMEMLIMIT\s*\n\s*value:\s*(\S+)`).FindSubmatch(b)
	if g == nil {
		return 0, "", fmt.Errorf("%s sets no GOMEMLIMIT", path)
	}
	return q.Value(), string(g[1]), nil
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// gitDescribe names the tree's code: its commit, "+" if it has changes.
func gitDescribe(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty=+").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
