package main

import (
	"fmt"
	"strings"
)

// coexistTable renders docs/bench/coexistence.json (make bench-cni): the
// issue-11 bypasses with the node CLI, the time to retake the position,
// the tcx path's per-packet cost and the agent at 250 pods in the same run.
func coexistTable() (string, error) {
	type status struct {
		Enforced   bool   `json:"enforced"`
		Reason     string `json:"reason"`
		Attachment string `json:"attachment"`
	}
	type cliCase struct {
		Setup   string    `json:"setup"`
		Before  []float64 `json:"before_ratios"`
		Status  status    `json:"status_before"`
		Action  string    `json:"action"`
		After   []float64 `json:"after_ratios"`
		Median  float64   `json:"after_median"`
		StatusA status    `json:"status_after"`
	}
	var doc struct {
		CLI struct {
			Reps      int     `json:"reps"`
			Window    float64 `json:"window_s"`
			LoadStart float64 `json:"load_average_start"`
			LoadEnd   float64 `json:"load_average_end"`
			Alone     cliCase `json:"alone"`
			TCXTail   cliCase `json:"tcx_tail_ok"`
			ClsBPF    cliCase `json:"clsbpf_pref1_after"`
			Peer      cliCase `json:"peer_redirect_ingress"`
			Yield     cliCase `json:"yield_head"`
		} `json:"cli"`
		Restore struct {
			Takeovers int     `json:"takeovers"`
			P50       float64 `json:"p50_ms"`
			P99       float64 `json:"p99_ms"`
			Max       float64 `json:"max_ms"`
			Load      float64 `json:"load_average"`
		} `json:"restore"`
		Cost map[string]any `json:"cost"`
	}
	if err := readJSON("docs/bench/coexistence.json", &doc); err != nil {
		return "", err
	}
	ratio := func(v []float64) string {
		if len(v) == 0 {
			return "—"
		}
		s := make([]string, len(v))
		for i, r := range v {
			if r >= 10 {
				s[i] = fmt.Sprintf("%.0f×", r)
			} else {
				s[i] = fmt.Sprintf("%.3f", r)
			}
		}
		return strings.Join(s, ", ")
	}
	enf := func(s status) string {
		if s.Enforced {
			return "true"
		}
		r := s.Reason
		if len(r) > 140 {
			r = r[:140] + "…"
		}
		return "**false**: " + strings.ReplaceAll(r, "|", "/")
	}
	var b strings.Builder
	c := doc.CLI
	fmt.Fprintf(&b, "50 Mbit/s limit, wire rate delivered to the receiving pod (its IP counters, after its own tc ingress hook: not eth0's rx counter, which counts what a pod-side hook then drops) over %d windows of %.0f s (ratio to the limit), `kubeshaper status --json --window 2s` during traffic; load average %.2f → %.2f:\n\n", c.Reps, c.Window, c.LoadStart, c.LoadEnd)
	b.WriteString("| setup | before (rule put first) | status before | what kubeshaper does | after | status after |\n|---|---|---|---|---|---|\n")
	for _, k := range []cliCase{c.Alone, c.TCXTail, c.ClsBPF, c.Peer, c.Yield} {
		before, sb := "—", "—"
		if len(k.Before) > 0 {
			before, sb = ratio(k.Before), enf(k.Status)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s (median %.3f) | %s |\n", k.Setup, before, sb, k.Action, ratio(k.After), k.Median, enf(k.StatusA))
	}
	r := doc.Restore
	if r.Takeovers > 0 {
		fmt.Fprintf(&b, "\nPosition retaken by the agent after another tool took it (deleted our filter, added a cls_bpf filter before it, attached a tcx program at the head): **p50 %.0f ms, p99 %.0f ms** (max %.0f ms) over %d takeovers; load average %.2f.\n", r.P50, r.P99, r.Max, r.Takeovers, r.Load)
	}
	if len(doc.Cost) > 0 {
		f := func(k string) float64 { v, _ := doc.Cost[k].(float64); return v }
		fmt.Fprintf(&b, "\nPer-packet cost with real traffic (64-byte UDP, sendmmsg, pod → pod through the node, a counted-only rule; medians of %.0f alternated rounds of 2 s; load average %v): no program %.0f ns/packet, cls_bpf %.0f (+%.0f), tcx %.0f (+%.0f): tcx − cls_bpf = **%+.0f ns/packet**.\n",
			f("rounds"), doc.Cost["load_average"], f("none_median_ns"), f("cls_bpf_median_ns"), f("cls_bpf_minus_none_ns"), f("tcx_median_ns"), f("tcx_minus_none_ns"), f("tcx_minus_cls_bpf_ns"))
	}
	var now, before map[string]any
	if readJSON("docs/bench/agent-coexistence.json", &now) == nil && readJSON("docs/bench/agent.json", &before) == nil {
		fmt.Fprintf(&b, "\nAgent at 250 pods with this code (`make bench-cni`): annotate-to-map p99 %v ms (committed `make bench-agent` figure: %v ms), start-up reconcile %v ms (%v ms).\n",
			now["annotate_to_map_p99_ms"], before["annotate_to_map_p99_ms"], now["startup_reconcile_ms"], before["startup_reconcile_ms"])
	}
	return b.String(), nil
}
