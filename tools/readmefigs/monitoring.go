package main

import (
	"fmt"
	"strings"
)

// monitoringTable renders docs/bench/monitoring.json (tests/agent,
// TestMonitoringCost: make bench-monitoring).
func monitoringTable() (string, error) {
	var m struct {
		Host struct {
			Date string `json:"date"`
		} `json:"host"`
		Prog struct {
			Rounds   int     `json:"rounds"`
			Trivial  float64 `json:"trivial_ns_per_pkt_median"`
			Monitor  float64 `json:"monitor_ns_per_pkt_median"`
			Flows    float64 `json:"flows_ns_per_pkt_median"`
			Extra    float64 `json:"flows_extra_ns_median"`
			ExtraMin float64 `json:"flows_extra_ns_min"`
			ExtraMax float64 `json:"flows_extra_ns_max"`
		} `json:"prog_run"`
		ProgHost struct {
			Date string `json:"date"`
		} `json:"prog_run_host"` // set when prog_run alone was re-measured
		Seq  ratios `json:"throughput"`
		Conc ratios `json:"throughput_concurrent"`
		CPU  struct {
			Seconds float64 `json:"seconds"`
			Gbit    float64 `json:"traffic_gbit"`
			CPU     float64 `json:"cpu_percent_of_a_core"`
			Idle    float64 `json:"idle_cpu_percent_of_core"`
			Scrapes int     `json:"scrapes"`
			RSS     float64 `json:"rss_kib"`
		} `json:"agent_cpu"`
	}
	if err := readJSON("docs/bench/monitoring.json", &m); err != nil {
		return "", err
	}
	var b strings.Builder
	when := m.Host.Date
	if m.ProgHost.Date != "" {
		when += fmt.Sprintf("; the two `prog.Run` rows re-measured %s", m.ProgHost.Date)
	}
	fmt.Fprintf(&b, "Run of %s.\n\n| figure | measured | goal |\n|---|---|---|\n", when)
	fmt.Fprintf(&b, "| `prog.Run`, no rule (counted only), 64 B UDP | %.1f ns/packet (trivial program: %.1f) | |\n", m.Prog.Monitor, m.Prog.Trivial)
	fmt.Fprintf(&b, "| … with per-flow records | %.1f ns/packet: **+%.1f ns** (paired median of %d interleaved rounds; %.1f–%.1f) | ≤ +30 ns |\n",
		m.Prog.Flows, m.Prog.Extra, m.Prog.Rounds, m.Prog.ExtraMin, m.Prog.ExtraMax)
	row := func(label string, r ratios) {
		ci := ""
		if len(r.CI) == 2 {
			ci = fmt.Sprintf("; 95 %% CI of the median %.3f–%.3f", r.CI[0], r.CI[1])
		}
		load := ""
		if len(r.Load) == 2 {
			load = fmt.Sprintf("; load average %.0f–%.0f on 2 CPUs", r.Load[0], r.Load[1])
		}
		fmt.Fprintf(&b, "| %s | **%.3f** median (IQR %.3f–%.3f, range %.3f–%.3f%s; %.2f vs %.2f Gbit/s%s) | ≥ 0.98 |\n",
			label, r.Median, r.P25, r.P75, r.Min, r.Max, ci, r.On, r.Off, load)
	}
	row(fmt.Sprintf("TCP throughput monitored / not, %d interleaved pairs", m.Seq.Pairs), m.Seq)
	row(fmt.Sprintf("… two pod pairs at once, one monitored, %d runs", m.Conc.Runs), m.Conc)
	fmt.Fprintf(&b, "| agent CPU while %.2f Gbit/s flows, /metrics scraped every 5 s (%d scrapes in %.0f s), flow export on | **%.3f %%** of a core (idle: %.3f %%; RSS %.1f MiB) | < 1 %% |\n",
		m.CPU.Gbit, m.CPU.Scrapes, m.CPU.Seconds, m.CPU.CPU, m.CPU.Idle, m.CPU.RSS/1024)
	return b.String(), nil
}

type ratios struct {
	Pairs  int       `json:"pairs"`
	Runs   int       `json:"runs"`
	Median float64   `json:"ratio_median"`
	P25    float64   `json:"ratio_p25"`
	P75    float64   `json:"ratio_p75"`
	Min    float64   `json:"ratio_min"`
	Max    float64   `json:"ratio_max"`
	On     float64   `json:"on_gbit_median"`
	Off    float64   `json:"off_gbit_median"`
	CI     []float64 `json:"ratio_median_ci95"`
	Load   []float64 `json:"loadavg_1m_before_after"`
}
