// Command membench measures kubeshaper's memory on a node (issue 12): the
// BPF maps' memlock and the memory cgroup usage (user + kernel) of a
// process that loads kubeshaper's datapath and applies rules to N pods'
// veths, run inside a memory cgroup limited to the DaemonSet's memory
// limit. `make bench-memory` runs it on this machine and in qemu guests
// with 64 and 192 CPUs (tools/kernels), for today's build and the
// baseline's.
//
// The process is not the agent: the agent needs a kube-apiserver, which a
// TCG guest with 192 CPUs cannot run in useful time. It is the agent's
// kernel-facing half — datapath.Open(With) sized for the node, then
// shaper.Apply for each pod, flows on, as the agent's reconciler does —
// and what it leaves charged to its cgroup (the maps) is what the agent's
// container carries on top of its user-space memory (measured with a real
// apiserver by `make bench-agent`).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
)

// Result is one measurement (one line of the JSON output).
type Result struct {
	Build      string `json:"build"` // "today" or "baseline"
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	Pods       int    `json:"pods"`
	Capacity   int    `json:"capacity"` // the node's pod capacity the maps are sized for
	LimitBytes int64  `json:"limit_bytes"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
	// The maps' memlock (bpftool's figure), summed.
	MemlockBytes int64            `json:"memlock_bytes"`
	Maps         map[string]int64 `json:"maps,omitempty"`
	// The cgroup: the loader's peak (user + kernel while applying) and
	// what stays charged after it exits (the pinned maps, page cache).
	PeakBytes  int64   `json:"peak_bytes"`
	AfterBytes int64   `json:"after_bytes"`
	Seconds    float64 `json:"seconds"`
}

func main() {
	load := flag.Bool("load", false, "loader mode (run by the orchestrator inside the cgroup)")
	pods := flag.Int("pods", 0, "loader: pods to apply rules to")
	capacity := flag.Int("capacity", 110, "loader: the node's pod capacity")
	pins := flag.String("pins", "", "loader: pin directory")
	prefix := flag.String("prefix", "ksdpm", "loader: veth name prefix")
	podList := flag.String("pod-counts", "0,250,500", "orchestrator: pod counts")
	limit := flag.String("limit", "", "orchestrator: memory limit (default: manifests/daemonset.yaml's)")
	build := flag.String("build", "today", "orchestrator: label of the build measured")
	out := flag.String("out", "", "orchestrator: append JSON lines here (default stdout)")
	baseBin := flag.String("baseline-bin", "", "orchestrator: also measure this membench binary (built -tags baseline) as build \"baseline\"")
	baseLimit := flag.String("baseline-limit", "256Mi", "orchestrator: the baseline's memory limit (the DaemonSet's then)")
	flag.Parse()
	if *load {
		if err := loader(*pins, *prefix, *pods, *capacity); err != nil {
			fmt.Fprintf(os.Stderr, "membench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	res, err := orchestrate(*podList, *limit, *build, *baseBin, *baseLimit)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membench: %v\n", err)
		os.Exit(1)
	}
	w := os.Stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "membench: %v\n", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	for _, r := range res {
		r.CPUs = runtime.NumCPU()
		enc.Encode(r)
		fmt.Printf("MEMBENCH %s cpus=%d pods=%d ok=%v memlock=%.1fMiB peak=%.1fMiB after=%.1fMiB %s\n",
			r.Build, r.CPUs, r.Pods, r.OK, mib(r.MemlockBytes), mib(r.PeakBytes), mib(r.AfterBytes), r.Error)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
