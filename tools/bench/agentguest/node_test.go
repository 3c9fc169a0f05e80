package agentguest

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
)

// The rule of every pod, as tools/membench's loader applies it: bandwidth
// both ways, loss on pod ingress (the flow table is always on).
var podRule = map[string]string{
	"kubeshaper.io/bandwidth": "100mbit egress; 200mbit ingress",
	"kubeshaper.io/loss":      "uniform ingress 1%",
}

// nodeSide is the node: on the host, or in the guest (tools/kernels exec).
// It makes the pods (netns + veth, and Pod objects with their IPs, on the
// Node the agent sizes its maps from), starts the agent in a memory
// cgroup limited as the DaemonSet's container, waits until the agent
// reports every pod and the maps hold every rule, and prints its memory as
// one result line.
func nodeSide(t *testing.T) {
	dir := os.Getenv(envNode)
	limit, err := strconv.ParseInt(os.Getenv(envLimit), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", envLimit, err)
	}
	npods, err := strconv.Atoi(os.Getenv(envPods))
	if err != nil {
		t.Fatalf("%s: %v", envPods, err)
	}
	if os.Getenv(envNet) != "" {
		if err := guestNIC(); err != nil {
			t.Fatal(err)
		}
	}
	cg, nocg, err := memoryCgroup(limit)
	if cg != "" {
		t.Cleanup(func() {
			// The maps' charge leaves once they are unpinned and closed.
			for i := 0; i < 50 && os.Remove(cg) != nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	if nocg != "" {
		t.Log(nocg)
	}
	// The shell joins the cgroup, then becomes the agent.
	wrap := []string{"sh", "-c", `exec "$0" "$@"`}
	if cg != "" {
		wrap = []string{"sh", "-c", `echo $$ >` + filepath.Join(cg, "cgroup.procs") + ` && exec "$0" "$@"`}
	}
	env, err := kubeenv.Attach(os.Getenv(envKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	w := agentenv.NewOn(t, "12b", env) // Node node1 (512 allocatable pods), namespace
	var wg sync.WaitGroup
	errs := make(chan error, npods)
	sem := make(chan struct{}, 8)
	for i := range npods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("p%d", i)
			// Addresses of a block no other World holds: the agent finds
			// a pod's netns by its IP among all of the machine's.
			p, err := w.TryAddPod(name)
			if err == nil {
				_, err = env.CreatePodWithIPs(t.Context(), w.NS, name, agentenv.NodeName, []string{p.IP.String()}, podRule, nil)
			}
			if err != nil {
				errs <- fmt.Errorf("pod %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	setup := time.Since(t0)
	t.Logf("%d pods (netns, veth, Pod object) in %v on %d CPUs", npods, setup, runtime.NumCPU())

	t1 := time.Now()
	ag := w.StartAgent(agentenv.Options{
		Binary:   filepath.Join(dir, "kubeshaper-agent"),
		Metrics:  true,
		NoWait:   true,
		LogLevel: "info",
		Resync:   time.Minute, // the agent's default
		Wrap:     wrap,
		Env:      append([]string{"GOMEMLIMIT=" + os.Getenv(envMemLimit), "GOMAXPROCS="}, strings.Fields(os.Getenv("KUBESHAPER_AGENTGUEST_ENV"))...),
	})
	ready := ag.WaitReady(t, 20*time.Minute)
	want := 2 * npods // bandwidth both ways: a rule per pod and direction
	var rules int
	// One scrape per second: a TCG guest's agent can take seconds to
	// answer while it applies, and the probe client gives up after 2 s.
	took, err := agentenv.Poll(20*time.Minute, time.Second, func() (bool, string) {
		if exited, err := ag.Exited(); exited {
			return false, fmt.Sprintf("agent exited: %v", err)
		}
		s, err1 := ag.Samples("kubeshaper_agent_pods", "kubeshaper_agent_queue_depth")
		pods, ok1 := s["kubeshaper_agent_pods"]
		queue, ok2 := s["kubeshaper_agent_queue_depth"]
		var err2 error
		if err1 == nil && (!ok1 || !ok2) {
			err2 = fmt.Errorf("no pods or queue sample")
		}
		m, err3 := agentenv.OpenMaps(w.PinDir)
		if err3 == nil {
			rules, err3 = m.RuleCount()
			m.Close()
		}
		ok := err1 == nil && err2 == nil && err3 == nil && int(pods) == npods && queue == 0 && rules == want
		return ok, fmt.Sprintf("pods %v (%v) queue %v (%v) rules %d/%d (%v)", pods, err1, queue, err2, rules, want, err3)
	})
	if err != nil {
		t.Fatalf("rules not applied: %v\nagent log:\n%s", err, agentenv.Tail(ag.Log(), 40))
	}
	applied := time.Since(t1)
	if exited, err := ag.Exited(); exited {
		t.Fatalf("agent exited: %v", err)
	}
	code, body := ag.Readyz()
	st, err := ag.ProcStatus()
	if err != nil {
		t.Fatal(err)
	}
	memlock, maps, err := mapsMemlock(ag.Pid())
	if err != nil {
		t.Fatal(err)
	}
	events := keyed(filepath.Join(cg, "memory.events"))
	recErrs, _ := ag.Metric("kubeshaper_agent_reconcile_errors_total")
	// GOMAXPROCS as on a node: none in the agent's environment, no CPU
	// limit (cpu.max) on its cgroup, all CPUs allowed: what the agent
	// then chooses (go_runtime below).
	// (Not /proc/pid/environ: the agent re-executes itself with
	// GOMAXPROCS set for its start, cmd/kubeshaper-agent/runtime.go.)
	gomaxprocs := "unset"
	status := keyedLines(fmt.Sprintf("/proc/%d/status", ag.Pid()), ":")
	res := map[string]any{
		"cpus":                 runtime.NumCPU(),
		"kernel":               release(),
		"pods":                 npods,
		"rules":                rules,
		"limit_bytes":          limit,
		"gomemlimit":           os.Getenv(envMemLimit),
		"cgroup":               cg + nocg,
		"memory_current":       readInt(filepath.Join(cg, "memory.current")),
		"memory_peak":          readInt(filepath.Join(cg, "memory.peak")),
		"memory_events":        events,
		"oom":                  events["oom"] + events["oom_kill"],
		"memory_stat":          keyed(filepath.Join(cg, "memory.stat")),
		"go_runtime":           goRuntime(ag),
		"vmrss_kib":            st["VmRSS"],
		"rss_anon_kib":         st["RssAnon"],
		"rss_file_kib":         st["RssFile"],
		"threads":              st["Threads"],
		"agent_gomaxprocs_env": gomaxprocs,
		"agent_cpus_allowed":   status["Cpus_allowed_list"],
		"cgroup_cpu_max":       cmp.Or(strings.TrimSpace(string(must(os.ReadFile(filepath.Join(cg, "cpu.max"))))), "none (no cpu controller: no CPU limit)"),
		"reconcile_errors":     recErrs,
		"maps_memlock":         memlock,
		"maps":                 maps,
		"readyz":               code,
		"readyz_body":          body,
		"setup_seconds":        setup.Seconds(),
		"ready_seconds":        ready.Seconds(),
		"applied_seconds":      applied.Seconds(),
		"rules_after_ready_s":  took.Seconds(),
		"node_load":            loadAvg(),
		"thp":                  strings.TrimSpace(string(must(os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")))),
		"agent_godebug":        envOf(ag.Pid(), "GODEBUG"),
		"date":                 time.Now().UTC().Format(time.RFC3339),
	}
	if code != http.StatusOK {
		t.Errorf("agent not ready after applying: %d %s", code, body)
	}
	if cg != "" {
		res["settled"] = settled(t, ag, cg, t1.Add(settleAfter))
	}
	if strings.Contains(os.Getenv("KUBESHAPER_AGENTGUEST_ENV"), "gctrace") {
		// The agent's collections (GODEBUG=gctrace=1), for a variant run.
		var gcs []string
		for _, l := range strings.Split(ag.Log(), "\n") {
			if strings.HasPrefix(l, "gc ") || strings.Contains(l, "level=") {
				gcs = append(gcs, l)
			}
		}
		res["agent_log"] = gcs
	}
	js, _ := json.Marshal(res)
	fmt.Println(resultMarker + string(js))
	if os.Getenv("KUBESHAPER_IN_GUEST") != "" && !t.Failed() {
		// The guest is thrown away when this returns: its cleanup (the
		// agent's, 250 netns deleted one by one) takes minutes under TCG
		// with many CPUs and would measure nothing.
		unix.Exit(0)
	}
}

// guestNIC configures the guest's NIC for tools/kernels' forward: eth0
// up, 10.0.2.15/24 (slirp's guest address; the forward is 10.0.2.100).
func guestNIC() error {
	l, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("the guest's NIC (KERNELS_APISERVER): %w", err)
	}
	addr, _ := netlink.ParseAddr("10.0.2.15/24")
	if err := netlink.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("eth0 10.0.2.15/24: %w", err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	// The forward answers once the link is up: wait for a connection.
	var cerr error
	for range 100 {
		c, err := net.DialTimeout("tcp", "10.0.2.100:6443", 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		cerr = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the host's apiserver through the forward: %w", cerr)
}

// memoryCgroup makes a cgroup v2 limited to limit bytes with no swap,
// as a container's, mounting the hierarchy in a guest, which has none. A
// host whose cgroup v2 has no memory controller (this one: it is bound to
// v1, which is the session machinery's) gives "" and the reason: the run
// there validates everything but the limit.
func memoryCgroup(limit int64) (string, string, error) {
	const root = "/sys/fs/cgroup"
	var fs unix.Statfs_t
	if unix.Statfs(root, &fs) != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		// Only a guest's empty /sys/fs/cgroup may be mounted over: on a
		// v1 or hybrid host that mount hides the host's own hierarchies
		// (it once did here, and the next kubelet found no cpu controller).
		if os.Getenv("KUBESHAPER_IN_GUEST") == "" {
			return "", "this host's /sys/fs/cgroup is not cgroup v2 (v1 or hybrid): not limited", nil
		}
		if err := unix.Mount("none", root, "cgroup2", 0, ""); err != nil {
			return "", "", fmt.Errorf("mounting cgroup2: %w", err)
		}
	}
	if b, _ := os.ReadFile(root + "/cgroup.controllers"); !strings.Contains(string(b), "memory") {
		if os.Getenv("KUBESHAPER_IN_GUEST") != "" {
			return "", "", fmt.Errorf("the guest's cgroup v2 has no memory controller")
		}
		return "", "no memory controller in this host's cgroup v2: not limited", nil
	}
	if err := os.WriteFile(root+"/cgroup.subtree_control", []byte("+memory"), 0); err != nil {
		return "", "", fmt.Errorf("enabling the memory controller: %w", err)
	}
	dir := filepath.Join(root, fmt.Sprintf("ks12b-agent-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		return dir, "", fmt.Errorf("setting the memory limit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0); err != nil && !os.IsNotExist(err) {
		return dir, "", fmt.Errorf("memory.swap.max: %w", err)
	}
	return dir, "", nil
}

// mapsMemlock sums the memlock of the BPF maps process pid holds
// (fdinfo, each map once) and lists it by map name.
func mapsMemlock(pid int) (int64, map[string]int64, error) {
	fdinfo := fmt.Sprintf("/proc/%d/fdinfo", pid)
	fds, err := os.ReadDir(fdinfo)
	if err != nil {
		return 0, nil, err
	}
	seen := map[string]bool{}
	byName := map[string]int64{}
	var total int64
	for _, f := range fds {
		kv := keyedLines(filepath.Join(fdinfo, f.Name()), ":")
		if _, ok := kv["map_type"]; !ok || seen[kv["map_id"]] {
			continue
		}
		seen[kv["map_id"]] = true
		n, _ := strconv.ParseInt(kv["memlock"], 10, 64)
		total += n
		name := mapName(kv["map_id"])
		byName[name] += n
	}
	return total, byName, nil
}

func keyedLines(path, sep string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), sep); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// keyed reads a cgroup "key value" file.
func keyed(path string) map[string]int64 {
	out := map[string]int64{}
	for k, v := range keyedLines(path, " ") {
		n, _ := strconv.ParseInt(v, 10, 64)
		out[k] = n
	}
	return out
}

func pick(m map[string]int64, keys ...string) map[string]int64 {
	out := map[string]int64{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func release() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

// mapName is a map's name by ID (bpftool's view), "id<N>" if unreadable.
func mapName(id string) string {
	n, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return "id" + id
	}
	m, err := ebpf.NewMapFromID(ebpf.MapID(n))
	if err != nil {
		return "id" + id
	}
	defer m.Close()
	if info, err := m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return "id" + id
}

// must is the value, or nothing when reading a file failed (a figure left
// empty, not a failed run).
func must(b []byte, err error) []byte {
	if err != nil {
		return nil
	}
	return b
}

// envOf is one variable of process pid's environment ("" if unset).
func envOf(pid int, name string) string {
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	for _, kv := range strings.Split(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
