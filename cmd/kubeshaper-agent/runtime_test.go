package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runtimeChild is set in the environment of this test binary's copies
// that the tests below start as "the agent".
const runtimeChild = "KUBESHAPER_TEST_RUNTIME_CHILD"

// TestMain lets a copy of the test binary act as the agent's start: it
// runs what main runs first and prints what the kernel and the runtime
// then say, so the tests see the real effects (a re-exec, a prctl flag,
// GOMAXPROCS) in a process of their own.
func TestMain(m *testing.M) {
	if os.Getenv(runtimeChild) != "" {
		startTuned()
		tuneRuntime(2)
		off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0)
		fmt.Printf("thp_disable=%d err=%v gomaxprocs=%d pid=%d\n", off, err, runtime.GOMAXPROCS(0), os.Getpid())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(t *testing.T, env ...string) map[string]string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{runtimeChild + "=1"}, env...)...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the child did not exit in 60 s (a re-exec loop?): %s", out)
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	kv := map[string]string{}
	for _, f := range strings.Fields(string(out)) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// TestStartTuned: the agent ends up with transparent huge pages off,
// by one re-exec (the same PID), not a loop.
func TestStartTuned(t *testing.T) {
	if _, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil {
		t.Skipf("PR_GET_THP_DISABLE: %v", err)
	}
	kv := runChild(t)
	if kv["thp_disable"] != "1" || kv["err"] != "<nil>" {
		t.Fatalf("huge pages not off in the agent: %v", kv)
	}
}

// TestTuneRuntimeGOMAXPROCS: without GOMAXPROCS in the environment the
// agent runs agentProcs(CPUs, 2) processors; with it, what it says.
func TestTuneRuntimeGOMAXPROCS(t *testing.T) {
	if got, want := runChild(t, "GOMAXPROCS=")["gomaxprocs"], strconv.Itoa(agentProcs(runtime.NumCPU(), 2)); got != want {
		t.Errorf("GOMAXPROCS unset: %s processors, want %s", got, want)
	}
	if got := runChild(t, "GOMAXPROCS=7")["gomaxprocs"]; got != "7" {
		t.Errorf("GOMAXPROCS=7: %s processors", got)
	}
	for _, c := range []struct{ def, workers, want int }{
		{2, 2, 2}, {64, 2, minMaxProcs}, {192, 2, minMaxProcs}, {64, 10, 12}, {1, 10, 1},
	} {
		if got := agentProcs(c.def, c.workers); got != c.want {
			t.Errorf("agentProcs(%d CPUs, %d workers) = %d, want %d", c.def, c.workers, got, c.want)
		}
	}
}
