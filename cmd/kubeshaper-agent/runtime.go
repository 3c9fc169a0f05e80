package main

import (
	"os"
	"runtime"
	"runtime/debug"

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
// maxProcs).
const minMaxProcs = 4

// tuneRuntime sets the agent's Go runtime for a node agent's life: a
// small heap, mostly idle, on nodes of 2 to 192 CPUs. Each setting yields
// to the environment (GOGC, GOMAXPROCS), so an operator can undo it.
func tuneRuntime(workers int) {
	// Empty counts as unset, as the runtime itself reads both.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		if n := maxProcs(workers); runtime.GOMAXPROCS(0) > n {
			runtime.GOMAXPROCS(n)
		}
	}
}

// withoutHugePages makes sure the agent runs with transparent huge pages
// off, re-executing itself once to get there: the flag
// (PR_SET_THP_DISABLE) is kept across exec and checked by the kernel at
// each page fault, so only a restart also covers what the runtime and the
// packages' init mapped before main.
//
// Why: on a node whose THP setting is "always" (Debian's and RHEL's
// default) the Go heap's first touch of a 2 MiB range takes a whole huge
// page, and when the runtime gives part of one back the kernel keeps all
// of it charged until memory pressure splits it. In a 2-CPU guest with
// 250 pods the agent's cgroup held 63.1 MiB a minute after start with
// THP, 46.8 MiB without (docs/bench/agent-guest.json, guest-2 and
// guest-2-nothp): 16 MiB charged and not used. Any failure leaves the
// agent running as it is: it only reads higher.
func withoutHugePages() {
	if off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil || off == 1 {
		return
	}
	if unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0) != nil {
		return
	}
	if exe, err := os.Executable(); err == nil {
		_ = unix.Exec(exe, os.Args, os.Environ()) // returns only on failure
	}
}

// maxProcs is the agent's GOMAXPROCS when the environment sets none:
// the pod workers plus the informers, the HTTP servers and a GC worker,
// at least minMaxProcs, and never more than the CPUs. The DaemonSet sets
// no CPU limit (a throttled agent would apply rules late), so Go would
// run one processor per CPU: 64 or 192 of them, each with its own
// allocation caches and GC work buffers, for an agent that is idle but
// for a few reconciles. Its memory then grew with the node's CPUs
// (README "Memory on a node"), its speed did not.
func maxProcs(workers int) int {
	return max(minMaxProcs, workers+2)
}

// releaseStartupMemory collects and returns to the OS what start-up left
// free: loading the BPF objects (ELF, BTF for CO-RE), the first lists of
// pods and services and the first reconcile of every pod peak at several
// times the heap the agent then lives with, and the runtime's background
// scavenger would give those pages back only over minutes.
func releaseStartupMemory() { debug.FreeOSMemory() }
