package agentenv

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options for one agent process.
type Options struct {
	// CleanupOnExit is --cleanup-on-exit.
	CleanupOnExit bool
	// Resync is --resync (default 3 s: leftover collection runs often).
	Resync time.Duration
	// Kubeconfig replaces the admin kubeconfig (e.g. a service account's).
	Kubeconfig string
	// BPFFS replaces the World's pin directory; "-" passes no --bpffs (the
	// agent's default, /sys/fs/bpf/kubeshaper).
	BPFFS string
	// Metrics serves /metrics on a free port (Agent.Metrics).
	Metrics bool
	// Args are appended to the command line.
	Args []string
	// NoWait returns at once instead of waiting for /readyz.
	NoWait bool
	// LogLevel is --log-level (default debug).
	LogLevel string
	// Wrap is a command the agent runs under (e.g. unshare ...); the
	// agent's command line is appended to it.
	Wrap []string
	// Env is added to the agent's environment (e.g. GODEBUG=gctrace=1,
	// whose lines LiveHeapMB reads).
	Env []string
	// Binary is the agent to run (default: this tree's, built by Binary),
	// e.g. an older build for a side-by-side benchmark.
	Binary string
}

// Agent is a running kubeshaper-agent process.
type Agent struct {
	Cmd     *exec.Cmd
	Health  string // host:port of /healthz and /readyz
	Metrics string // host:port of /metrics, if Options.Metrics
	LogPath string

	done    chan struct{}
	exitErr error
}

// StartAgent starts an agent on the World and (unless o.NoWait) waits up
// to 30 s for /readyz. t.Cleanup kills it if it still runs, and prints the
// tail of its log if the test failed.
func (w *World) StartAgent(o Options) *Agent {
	w.T.Helper()
	if o.Resync == 0 {
		o.Resync = 3 * time.Second
	}
	if o.LogLevel == "" {
		o.LogLevel = "debug"
	}
	kubeconfig := o.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = w.Env.KubeconfigPath()
	}
	pins := o.BPFFS
	if pins == "" {
		pins = w.PinDir
	}
	logf, err := os.CreateTemp("", "ksagent-log")
	if err != nil {
		w.T.Fatal(err)
	}
	a := &Agent{Health: fmt.Sprintf("127.0.0.1:%d", FreePort(w.T)), LogPath: logf.Name(), done: make(chan struct{})}
	metrics := ""
	if o.Metrics {
		a.Metrics = fmt.Sprintf("127.0.0.1:%d", FreePort(w.T))
		metrics = a.Metrics
	}
	args := []string{
		"--kubeconfig", kubeconfig,
		"--node-name", NodeName,
		"--node-netns", w.NodeNetns(),
		"--metrics-addr", metrics,
		"--health-addr", a.Health,
		"--resync", o.Resync.String(),
		"--log-level", o.LogLevel,
		fmt.Sprintf("--cleanup-on-exit=%v", o.CleanupOnExit),
	}
	if pins != "-" {
		args = append(args, "--bpffs", pins)
	}
	bin := o.Binary
	if bin == "" {
		bin = Binary(w.T)
	}
	argv := append(append([]string{bin}, args...), o.Args...)
	if len(o.Wrap) > 0 {
		argv = append(append([]string{}, o.Wrap...), argv...)
	}
	a.Cmd = exec.Command(argv[0], argv[1:]...)
	a.Cmd.Stdout, a.Cmd.Stderr = logf, logf
	if len(o.Env) > 0 {
		a.Cmd.Env = append(os.Environ(), o.Env...)
	}
	// Dies with the test binary (a panic, go test -timeout) instead of
	// shaping a netns that is about to disappear.
	a.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawnerThread(a.Cmd); err != nil {
		logf.Close()
		w.T.Fatal(err)
	}
	go func() {
		a.exitErr = a.Cmd.Wait()
		logf.Close()
		close(a.done)
	}()
	w.T.Cleanup(func() {
		a.Kill()
		if w.T.Failed() {
			w.T.Logf("agent (pid %d) log:\n%s", a.Pid(), Tail(a.Log(), 60))
		}
		os.Remove(a.LogPath)
	})
	if !o.NoWait {
		a.WaitReady(w.T, 30*time.Second)
	}
	return a
}

// Pid is the agent's process ID.
func (a *Agent) Pid() int { return a.Cmd.Process.Pid }

// Exited reports whether the process has exited, and how.
func (a *Agent) Exited() (bool, error) {
	select {
	case <-a.done:
		return true, a.exitErr
	default:
		return false, nil
	}
}

// Wait waits up to d for the process to exit.
func (a *Agent) Wait(d time.Duration) (exited bool, err error) {
	select {
	case <-a.done:
		return true, a.exitErr
	case <-time.After(d):
		return false, nil
	}
}

// WaitReady waits for /readyz to answer 200.
func (a *Agent) WaitReady(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	took, err := Poll(timeout, 50*time.Millisecond, func() (bool, string) {
		if exited, err := a.Exited(); exited {
			return false, fmt.Sprintf("agent exited: %v", err)
		}
		code, body := a.Readyz()
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	if err != nil {
		t.Fatalf("agent not ready: %v\nlog:\n%s", err, Tail(a.Log(), 40))
	}
	return took
}

var probeClient = &http.Client{Timeout: 2 * time.Second}

// Readyz returns /readyz's status code and body (0 and the error when it
// does not answer).
func (a *Agent) Readyz() (int, string) {
	resp, err := probeClient.Get("http://" + a.Health + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// Metric reads one unlabelled sample from /metrics (Options.Metrics).
func (a *Agent) Metric(name string) (float64, error) {
	s, err := a.Samples(name)
	if err != nil {
		return 0, err
	}
	v, ok := s[name]
	if !ok {
		return 0, fmt.Errorf("no sample %s in /metrics", name)
	}
	return v, nil
}

// Samples reads unlabelled samples from one scrape of /metrics: a
// sample missing from it is left out of the map.
func (a *Agent) Samples(names ...string) (map[string]float64, error) {
	if a.Metrics == "" {
		return nil, fmt.Errorf("metrics are off for this agent")
	}
	resp, err := probeClient.Get("http://" + a.Metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && want[f[0]] {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}

// Stop sends SIGTERM and waits (up to 20 s) for a clean exit; it returns
// how long the agent took.
func (a *Agent) Stop(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	a.Cmd.Process.Signal(syscall.SIGTERM)
	exited, err := a.Wait(20 * time.Second)
	took := time.Since(start)
	if !exited {
		t.Fatalf("agent did not exit within 20 s of SIGTERM\nlog:\n%s", Tail(a.Log(), 40))
	}
	if err != nil {
		t.Fatalf("agent exited with %v after SIGTERM\nlog:\n%s", err, Tail(a.Log(), 40))
	}
	return took
}

// Kill sends SIGKILL (by PID, if still running) and reaps the process.
func (a *Agent) Kill() {
	if exited, _ := a.Exited(); exited {
		return
	}
	a.Cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
}

// Log returns the agent's log so far.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.LogPath)
	return string(b)
}

// RSSKiB is the agent's resident set size (VmRSS).
func (a *Agent) RSSKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", a.Pid())
}

// CPUTime is the CPU time (user + system) the agent has used so far, from
// /proc/<pid>/stat.
func (a *Agent) CPUTime() (time.Duration, error) {
	return CPUTimeOf(a.Pid())
}

// CPUTimeOf reads utime+stime of a process.
func CPUTimeOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command may contain spaces: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %v %v", pid, err1, err2)
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// CountLog counts the agent's log lines containing s.
func (a *Agent) CountLog(s string) int {
	return strings.Count(a.Log(), s)
}

// Pdeathsig fires when the *thread* that forked the child exits. Tests
// that enter network namespaces end locked threads, so children are forked
// from one goroutine that locks its thread and never exits (as kubeenv
// does for etcd and kube-apiserver).
var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

func startOnSpawnerThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: lives as long as the process
			for r := range spawnCh {
				r.res <- r.cmd.Start()
			}
		}()
	})
	res := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, res: res}
	return <-res
}

// StartupTook reads the agent's own "start-up reconcile done" log line.
func (a *Agent) StartupTook() (time.Duration, error) {
	for _, line := range strings.Split(a.Log(), "\n") {
		if !strings.Contains(line, "start-up reconcile done") {
			continue
		}
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "took="); ok {
				return time.ParseDuration(strings.Trim(v, `"`))
			}
		}
	}
	return 0, fmt.Errorf("no start-up reconcile line in the agent's log")
}

// LiveHeapMB is the live heap after the agent's last garbage collection,
// from GODEBUG=gctrace=1 lines ("gc N @…: …, A->B->C MB, …": C), and the
// number of collections so far; -1 without gctrace lines.
func (a *Agent) LiveHeapMB() (live float64, gcs int) {
	live = -1
	for _, line := range strings.Split(a.Log(), "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			if !strings.HasSuffix(f, " MB") || !strings.Contains(f, "->") {
				continue
			}
			parts := strings.Split(strings.TrimSuffix(f, " MB"), "->")
			if v, err := strconv.ParseFloat(parts[len(parts)-1], 64); err == nil {
				live, gcs = v, gcs+1
			}
		}
	}
	return live, gcs
}

// ProcStatus reads numeric fields of /proc/<pid>/status (kB values as
// numbers: VmRSS, RssAnon, RssFile, Threads, ...) and counts open file
// descriptors as "FDs".
func (a *Agent) ProcStatus() (map[string]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Pid()))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil {
			out[k] = n
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.Pid()))
	if err == nil {
		out["FDs"] = len(fds)
	}
	return out, nil
}
