package main

import (
	"fmt"
	"strings"
)

// reliabilityTable renders docs/bench/reliability.json (make reliability:
// tests/reliability at full size; docs/reliability.md).
func reliabilityTable() (string, error) {
	var r map[string]map[string]any
	if err := readJSON("docs/bench/reliability.json", &r); err != nil {
		return "", err
	}
	num := func(sec, key string) float64 {
		v, _ := r[sec][key].(float64)
		return v
	}
	var b strings.Builder
	b.WriteString("| case | measured | goal |\n|---|---|---|\n")
	row := func(sec, label, goal, format string, keys ...string) {
		if r[sec] == nil {
			return
		}
		args := make([]any, len(keys))
		for i, k := range keys {
			args[i] = num(sec, k)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", label, fmt.Sprintf(format, args...), goal)
	}
	row("churn", "pod churn (netns + Pod object, five orders)", "0 leaks, RSS flat",
		"%.0f cycles in %.0f s (%.1f/s); after: %.0f filters, %.0f map entries, %.0f extra pins; RSS %.1f MiB before, %.1f after %.0f cycles (client-go's Event caches mostly full), %.1f at the end",
		"cycles", "took_s", "cycles_per_s", "filters_left", "entries_left", "extra_pins", "rss_initial_mib", "rss_start_mib", "warmup_cycles", "rss_end_mib")
	row("crash_restart", "`kill -9` mid start-up reconcile of 250 pods, restart", "≤ 5 s",
		"converged %.2f s after the restart (killed at %.0f pods applied)", "converged_after_restart_s", "killed_at_applied")
	row("crash_restart", "`kill -9` mid change of 250 pods, changes while down, restart", "≤ 5 s",
		"converged %.2f s after the restart; one filter per hook, no leftover", "converged_after_restart_with_changes_s")
	row("api_outage", "API server down (traffic flowing)", "rules kept, CPU bounded",
		"%.0f s down: rate %.1f Mbit/s through a 20 Mbit/s rule; agent CPU %.2f s; not ready after %.1f s",
		"outage_s", "rate_during_mbit", "agent_cpu_s", "not_ready_after_s")
	row("api_outage", "resync after the API's return", "≤ 5 s",
		"change written during the outage: %.2f s; change made after: %.2f s",
		"etcd_change_applied_after_return_s", "api_change_applied_after_return_s")
	row("shutdown_cleanup", "SIGTERM, `--cleanup-on-exit=true`", "≤ 2 s",
		"%.0f pods cleared in %.2f s; %.0f filters, %.0f pins left", "pods", "exit_s", "filters_left", "pins_left")
	row("shutdown_keep", "SIGTERM, `--cleanup-on-exit=false`", "unchanged",
		"%.0f rules and %.0f filters identical (values, program IDs)", "rules", "filters")
	row("hostile_input", "hostile annotations through the API", "an Event each, nothing half-applied",
		"%.0f cases, longest Event %.0f bytes; API limit %.0f bytes for all annotations", "cases", "longest_event_bytes", "api_annotation_limit_bytes")
	row("least_privilege", "the manifests' RBAC, `--namespace-selector`", "least privilege",
		"%.0f needed requests allowed, %.0f others denied; namespace selected → shaped in %.3f s", "rbac_allowed", "rbac_denied", "select_to_shaped_s")
	var loads []string
	for _, sec := range []string{"churn", "crash_restart", "shutdown_cleanup", "api_outage"} {
		if v, ok := r[sec]["loadavg_1m"].(float64); ok {
			loads = append(loads, fmt.Sprintf("%s %.0f", strings.ReplaceAll(sec, "_", " "), v))
		}
	}
	if len(loads) > 0 {
		fmt.Fprintf(&b, "\nLoad average of the (shared, 2-core) machine when each figure was taken: %s.\n", strings.Join(loads, ", "))
	}
	return b.String(), nil
}
