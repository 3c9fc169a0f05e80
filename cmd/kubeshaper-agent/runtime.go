package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultGCPercent is the agent's GOGC unless the environment sets one.
// The agent's live heap is small (~3 MB at 250 pods, informers slimmed by
// pkg/kube's transforms) and Go's default of 100 lets the heap grow to
// twice that plus the runtime's slack before collecting: at 250 pods the
// agent's VmRSS was 42.1 MB with 100 and 39.9 MB with 50, anonymous
// memory 14.4 and 12.1 MB (medians of 4 rounds side by side, make
// bench-agent-gc, docs/bench/agent-gc.json), for collections of a 3 MB
// heap — CPU that does not show beside the informers' decoding.
const defaultGCPercent = 50

// minMaxProcs is the fewest Go processors the agent caps itself to (see
// agentProcs).
const minMaxProcs = 4

// tuneRuntime sets the agent's Go runtime for a node agent's life: a
// small heap, mostly idle, on nodes of 2 to 192 CPUs. Each setting yields
// to the environment (GOGC, GOMAXPROCS), so an operator can undo it.
func tuneRuntime(workers int) {
	// Empty counts as unset, as the runtime itself reads both.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	def, userSet := runtime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS") != ""
	if v := os.Getenv(procsDefaultEnv); v != "" {
		// startTuned set GOMAXPROCS for this process's start: not the
		// user's. The runtime has read both; the pod's children must not.
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			def, userSet = n, false
		}
		os.Unsetenv(procsDefaultEnv)
		os.Unsetenv("GOMAXPROCS")
	}
	if !userSet {
		if n := agentProcs(def, workers); n != runtime.GOMAXPROCS(0) {
			runtime.GOMAXPROCS(n)
		}
	}
}

// procsDefaultEnv carries the runtime's own GOMAXPROCS (one per CPU, or
// the container's CPU limit) across startTuned's re-exec, which sets
// GOMAXPROCS to minMaxProcs for the new process's start.
const procsDefaultEnv = "KUBESHAPER_AGENT_DEFAULT_PROCS"

// startTuned re-executes the agent once, with what only holds if set
// before the Go runtime and the packages' init run:
//
//   - Transparent huge pages off (PR_SET_THP_DISABLE, kept across exec
//     and checked by the kernel at each page fault). On a node whose THP
//     setting is "always" (Debian's and RHEL's default) the heap's first
//     touch of a 2 MiB range takes a whole huge page, and when the runtime
//     gives part of one back the kernel keeps all of it charged until
//     memory pressure splits it. In a 2-CPU guest with 250 pods the
//     agent's cgroup held 65.4 MiB 75 s after start with THP, 46.8 MiB
//     without (docs/bench/agent-guest.json, guest-2-ceb5a18 and
//     guest-2-nothp): most of the difference charged and not used.
//   - Few Go processors from the start (see agentProcs): the runtime would
//     otherwise make one per CPU, 64 or 192 of them, before main could
//     lower the count.
//
// The flag also marks the second start. Any failure leaves the agent
// running as it is: it only reads higher.
func startTuned() {
	if off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil || off == 1 {
		return
	}
	if unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0) != nil {
		return
	}
	env := os.Environ()
	if def := runtime.GOMAXPROCS(0); os.Getenv("GOMAXPROCS") == "" && def > minMaxProcs {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(minMaxProcs), procsDefaultEnv+"="+strconv.Itoa(def))
	}
	_ = unix.Exec("/proc/self/exe", os.Args, env) // returns only on failure
}

// agentProcs is the agent's GOMAXPROCS when the environment sets none:
// the pod workers plus the informers, the HTTP servers and a GC worker,
// at least minMaxProcs, and never more than the runtime's own default def
// (the CPUs, or the container's CPU limit). The DaemonSet sets no CPU
// limit (a throttled agent would apply rules late), so Go would run one
// processor per CPU: 64 or 192 of them, each with its own allocation
// caches and GC work buffers, for an agent that is idle but for a few
// reconciles. Its memory then grew with the node's CPUs (README "Memory
// on a node"), its speed did not.
func agentProcs(def, workers int) int { return min(def, max(minMaxProcs, workers+2)) }

// releaseStartupMemory collects and returns to the OS what start-up left
// free: loading the BPF objects (ELF, BTF for CO-RE), the first lists of
// pods and services and the first reconcile of every pod peak at several
// times the heap the agent then lives with, and the runtime's background
// scavenger would give those pages back only over minutes.
func releaseStartupMemory() { debug.FreeOSMemory() }

// trimExecutable gives back the agent binary's pages that start-up read
// and steady work does not use, and stops the kernel reading ahead around
// the ones it faults later.
//
// Why: the binary's page cache is charged to the memory cgroup of the
// process that first reads it — the agent's container. Start-up (the
// runtime, every package's init, loading the BPF objects, the first
// lists and reconciles) touches most of its ~22 MB of text, read-only data
// and pc-line table, and the kernel's read-around (128 KiB per fault)
// brings in more: ~20 MiB of the container's memory was the binary. Its
// read-only mappings are advised MADV_RANDOM (no read-around: a later
// fault reads its own page) and MADV_PAGEOUT (their pages no other process
// maps leave the page cache now, not at the next memory pressure). What the
// agent still runs faults back in, a page at a time. Errors leave the pages
// where they are: the agent only reads higher.
func trimExecutable() (pagedOut int, err error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(maps), "\n") {
		// start-end perms offset dev inode path
		f := strings.Fields(l)
		if len(f) < 6 || f[5] != exe || strings.Contains(f[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT} {
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); e != 0 {
				return pagedOut, fmt.Errorf("madvise %s %s: %w", f[0], f[1], e)
			}
		}
		pagedOut += int(end - start)
	}
	// MADV_PAGEOUT takes only the pages mapped here; read-around also
	// cached pages nobody mapped. Those of the binary go too (a page
	// another process maps stays: the kernel skips mapped pages).
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return pagedOut, err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return pagedOut, fmt.Errorf("fadvise %s: %w", exe, err)
	}
	return pagedOut, nil
}
