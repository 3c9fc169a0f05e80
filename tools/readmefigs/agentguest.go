package main

import (
	"fmt"
	"sort"
	"strings"
)

// agentGuestReading is one reading of the agent's cgroup and process
// (tools/bench/agentguest, settle_test.go snapshot).
type agentGuestReading struct {
	Current     int64            `json:"memory_current"`
	Stat        map[string]int64 `json:"memory_stat"`
	Unaccounted int64            `json:"unaccounted"`
	VmRSS       int64            `json:"vmrss_kib"`
	RssAnon     int64            `json:"rss_anon_kib"`
	RssFile     int64            `json:"rss_file_kib"`
	Go          map[string]float64
}

// agentGuestRun is one section of docs/bench/agent-guest.json
// (tools/bench/agentguest: the real agent, 250 pods' rules, under the
// DaemonSet's memory limit, in a qemu guest or on the host).
type agentGuestRun struct {
	CPUs       int                `json:"cpus"`
	Kernel     string             `json:"kernel"`
	Pods       int                `json:"pods"`
	Rules      int                `json:"rules"`
	Limit      int64              `json:"limit_bytes"`
	GoMemLimit string             `json:"gomemlimit"`
	Current    int64              `json:"memory_current"`
	Peak       int64              `json:"memory_peak"`
	Events     map[string]int64   `json:"memory_events"`
	VmRSS      int64              `json:"vmrss_kib"`
	Memlock    int64              `json:"maps_memlock"`
	Maps       map[string]int64   `json:"maps"`
	Ready      float64            `json:"ready_seconds"`
	Applied    float64            `json:"applied_seconds"`
	Code       string             `json:"code"`
	CodeNote   string             `json:"code_note"`
	Scrape     string             `json:"scrape"`
	ExtraEnv   string             `json:"extra_env"`
	Go         map[string]float64 `json:"go_runtime"`
	Date       string             `json:"date"`
	Settled    *struct {
		After  float64           `json:"seconds_after_start"`
		Before agentGuestReading `json:"before_drain"`
	} `json:"settled"`
	How struct {
		Where     string `json:"where"`
		LoadStart string `json:"load_start"`
		LoadEnd   string `json:"load_end"`
	} `json:"how"`
}

// perCPUUncharged is the memlock of the agent's per-CPU maps, which the
// kernel does not charge to the cgroup that creates them (memRow.uncharged)
// but which is the node's memory all the same.
func (r agentGuestRun) perCPUUncharged() int64 { return sumMaps(r.Maps, perCPUMaps...) }

// agentGuestTable renders every section: the node's total for the agent
// is its cgroup's memory.current a fixed time after start (settled) plus
// the per-CPU maps the cgroup is not charged for.
func agentGuestTable() (string, error) {
	var runs map[string]agentGuestRun
	if err := readJSON("docs/bench/agent-guest.json", &runs); err != nil {
		return "", err
	}
	names := make([]string, 0, len(runs))
	for n := range runs {
		names = append(names, n)
	}
	// Per CPU count: the code before this pass, variants, then now.
	rank := func(r agentGuestRun) int {
		switch {
		case r.Code == "":
			return 0
		case strings.HasPrefix(r.Code, "ceb5a18") && r.ExtraEnv == "" && r.CodeNote == "":
			return 0
		case r.ExtraEnv != "" || r.Scrape != "" || r.CodeNote != "" && !strings.HasPrefix(r.CodeNote, "the agent of"):
			return 1
		}
		return 2
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := runs[names[i]], runs[names[j]]
		if a.CPUs != b.CPUs {
			return a.CPUs < b.CPUs
		}
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if a.Pods != b.Pods {
			return a.Pods < b.Pods
		}
		return a.Date < b.Date
	})
	mib := func(b int64) string {
		if b < 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f", float64(b)/(1<<20))
	}
	var b strings.Builder
	b.WriteString("| CPUs | pods | agent (code) | GOMAXPROCS | all rules applied: cgroup now / peak | **node total** 75 s after start | = cgroup | + per-CPU maps | cgroup: anon / file / kernel / rest | agent VmRSS | OOM events | ready / rules after | load (1/5/15 min, start → end) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range names {
		r := runs[n]
		code := r.Code
		switch {
		case code == "":
			code = "ceb5a18 (before)"
		case rank(r) == 0:
			code += " (before)"
		}
		if r.ExtraEnv != "" {
			code += ", " + r.ExtraEnv
		}
		if r.Scrape != "" {
			code += ", `/metrics` scraped every " + r.Scrape
		}
		procs := "one per CPU"
		if v, ok := r.Go["go_sched_gomaxprocs_threads"]; ok && v > 0 {
			procs = fmt.Sprintf("%.0f", v)
		}
		total, cg, pcpu, parts := "not read", "–", mib(r.perCPUUncharged()), "–"
		if s := r.Settled; s != nil {
			st := s.Before.Stat
			total = "**" + mib(s.Before.Current+r.perCPUUncharged()) + "**"
			cg = mib(s.Before.Current)
			parts = fmt.Sprintf("%s / %s / %s / %s", mib(st["anon"]), mib(st["file"]), mib(st["kernel"]), mib(s.Before.Unaccounted))
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s / %s | %s | %s | %s | %s | %s | %d | %.0f s / %.0f s | %s → %s |\n",
			r.CPUs, r.Pods, code, procs, mib(r.Current), mib(r.Peak), total, cg, pcpu, parts, mib(r.VmRSS*1024),
			r.Events["oom"]+r.Events["oom_kill"], r.Ready, r.Applied, r.How.LoadStart, r.How.LoadEnd)
	}
	b.WriteString("\nMiB. `make bench-agent-guest AGENT_GUEST_CPUS=N [AGENT_GUEST_BASE=<commit>]` (tools/bench/agentguest, `docs/bench/agent-guest.json`), qemu guests (TCG, kernel 6.18, THP `always` as Debian ships it): kube-apiserver and etcd run on the host (tests/kubeenv); the agent binary (`CGO_ENABLED=0`) runs in the guest as a DaemonSet pod would — `GOMEMLIMIT` and the memory limit read from `manifests/daemonset.yaml`, no swap, no `GOMAXPROCS` and no CPU limit — against 250 pods (or *pods*: netns + veth, Pod objects with their IPs) each with bandwidth both ways and loss (flows on), and reaches the apiserver through qemu's user-mode network (`restrict=on`, one `guestfwd` to the apiserver's port, `tools/kernels` `KERNELS_APISERVER`; the certificate is checked, `tls-server-name`). *All rules applied*: `kubeshaper_agent_pods` is 250, the queue empty, the pinned maps hold two rules a pod; the agent's cgroup's `memory.current` then and `memory.peak`. *Node total*: `memory.current` 75 s after the agent started (past its first resync), plus the per-CPU maps' memlock (`ks_pcpu`, `ks_dup_guard`, `ksp_stats`), which the kernel does not charge to the cgroup. *rest*: charged and not in `memory.stat`'s anon, file or kernel — the kernel's per-CPU charge batches. *OOM events*: `memory.events` oom + oom_kill.\n")
	return b.String(), nil
}
