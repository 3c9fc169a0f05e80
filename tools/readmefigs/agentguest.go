package main

import (
	"fmt"
	"sort"
	"strings"
)

// agentGuestRun is one section of docs/bench/agent-guest.json
// (tools/bench/agentguest: the real agent, 250 pods' rules, under the
// DaemonSet's memory limit, in a qemu guest or on the host).
type agentGuestRun struct {
	CPUs       int              `json:"cpus"`
	Kernel     string           `json:"kernel"`
	Pods       int              `json:"pods"`
	Rules      int              `json:"rules"`
	Limit      int64            `json:"limit_bytes"`
	GoMemLimit string           `json:"gomemlimit"`
	Cgroup     string           `json:"cgroup"`
	Current    int64            `json:"memory_current"`
	Peak       int64            `json:"memory_peak"`
	Events     map[string]int64 `json:"memory_events"`
	VmRSS      int64            `json:"vmrss_kib"`
	RssAnon    int64            `json:"rss_anon_kib"`
	RssFile    int64            `json:"rss_file_kib"`
	Memlock    int64            `json:"maps_memlock"`
	Readyz     int              `json:"readyz"`
	Ready      float64          `json:"ready_seconds"`
	Applied    float64          `json:"applied_seconds"`
	Date       string           `json:"date"`
	How        struct {
		Where     string `json:"where"`
		LoadStart string `json:"load_start"`
		LoadEnd   string `json:"load_end"`
	} `json:"how"`
}

func agentGuestTable() (string, error) {
	var runs map[string]agentGuestRun
	if err := readJSON("docs/bench/agent-guest.json", &runs); err != nil {
		return "", err
	}
	names := make([]string, 0, len(runs))
	for n := range runs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return runs[names[i]].CPUs < runs[names[j]].CPUs })
	mib := func(b int64) string {
		if b < 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f", float64(b)/(1<<20))
	}
	var b strings.Builder
	b.WriteString("| where | CPUs | pods / rules in the maps | limit | cgroup now | cgroup peak | OOM events | agent VmRSS (anon + file) | maps' memlock | ready / all rules applied after | load (1/5/15 min, start → end) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range names {
		r := runs[n]
		where := "qemu guest (TCG), kernel " + r.Kernel
		limit := mib(r.Limit) + " MiB"
		oom := fmt.Sprintf("%d oom, %d oom_kill", r.Events["oom"], r.Events["oom_kill"])
		if r.How.Where == "host" {
			where = "host, kernel " + r.Kernel
			if r.Current < 0 {
				limit, oom = "none (no memory controller here)", "–"
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d / %d | %s | %s | %s | %s | %s (%s + %s) | %s | %.0f s / %.0f s | %s → %s |\n",
			where, r.CPUs, r.Pods, r.Rules, limit, mib(r.Current), mib(r.Peak), oom,
			mib(r.VmRSS*1024), mib(r.RssAnon*1024), mib(r.RssFile*1024), mib(r.Memlock), r.Ready, r.Applied, r.How.LoadStart, r.How.LoadEnd)
	}
	b.WriteString("\nMiB. `make bench-agent-guest AGENT_GUEST_CPUS=N` (tools/bench/agentguest, `docs/bench/agent-guest.json`): kube-apiserver and etcd run on the host (tests/kubeenv); the agent binary (`CGO_ENABLED=0`) runs in the guest, as a DaemonSet pod would — `GOMEMLIMIT` and the memory limit read from `manifests/daemonset.yaml`, no swap, `GOMAXPROCS` unset (one per CPU: the DaemonSet sets no CPU limit) — against 250 pods (netns + veth, Pod objects with their IPs) each with bandwidth both ways and loss (flows on), and reaches the apiserver through qemu's user-mode network (`restrict=on`; one `guestfwd` whose every connection runs `kernels relay` to the apiserver's port; tools/kernels `KERNELS_APISERVER`; the certificate is checked as issued to 127.0.0.1, `tls-server-name`). *All rules applied*: the agent's `kubeshaper_agent_pods` is 250, its queue empty, and the pinned maps hold 500 rules. *cgroup*: `memory.current` / `memory.peak` of the agent's cgroup (maps and kernel state included), read then.\n")
	return b.String(), nil
}
