package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
)

// pacingTables renders docs/bench/pacing.json (tools/bench -sections
// pacing: make bench-pacing): TCP through a limit, every enforcement side
// by side (issue 13).
func pacingTables() (string, error) { return pacingTablesFrom("docs/bench/pacing.json") }

// pacingFQRateTables renders the first table reproduced: the
// application pacing its own socket (iperf3 --fq-rate) with no rule and
// under the policer, beside the policer alone and the default
// (docs/bench/pacing-fqrate.json: tools/bench -sections pacing -modes
// drop,none+fqrate,drop+fqrate94,drop+pacing,drop+pacing+fqrate94).
func pacingFQRateTables() (string, error) { return pacingTablesFrom("docs/bench/pacing-fqrate.json") }

// pacingRatesTables renders the runs at other targets, one table per run
// (docs/bench/pacing-rates-*.json: tools/bench -sections pacing -rates …
// with a subset of the modes, when the bench time did not allow the whole
// matrix in one run).
func pacingRatesTables() (string, error) {
	files, err := filepath.Glob("docs/bench/pacing-rates-*.json")
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no docs/bench/pacing-rates-*.json")
	}
	var b strings.Builder
	for i, f := range files {
		var h struct {
			CLI struct {
				Head string `json:"repo_git_head"`
			} `json:"kubeshaper_cli"`
		}
		if err := readJSON(f, &h); err != nil {
			return "", err
		}
		t, err := pacingTablesFrom(f)
		if err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "`%s`, kubeshaper at commit %s. ", filepath.Base(f), h.CLI.Head)
		b.WriteString(t)
	}
	return b.String(), nil
}

func pacingTablesFrom(path string) (string, error) {
	var d struct {
		Started  string  `json:"started"`
		ElapsedS float64 `json:"elapsed_s"`
		Config   struct {
			Reps     int     `json:"reps"`
			Duration float64 `json:"duration_s"`
			RRSize   int     `json:"rr_size_bytes"`
		} `json:"config"`
		Pacing struct {
			Idle   float64 `json:"idle_ping_p99_ms"`
			Points []struct {
				Case       string  `json:"case"`
				Streams    int     `json:"streams"`
				Target     float64 `json:"target_bps"`
				Mode       string  `json:"mode"`
				Ratio      float64 `json:"ratio"`
				Min        float64 `json:"min_ratio"`
				Max        float64 `json:"max_ratio"`
				First      float64 `json:"first_second_ratio"`
				P5         float64 `json:"p5_100ms_ratio"`
				P95        float64 `json:"p95_100ms_ratio"`
				RetransPct float64 `json:"retrans_pct"`
				Reps       []struct {
					Drops int64 `json:"kubeshaper_bandwidth_drops"`
				} `json:"reps"`
				Retrans float64 `json:"retrans_segs"`
				Drops   float64 `json:"kubeshaper_bandwidth_drops"`
				Ping    float64 `json:"ping_p99_ms"`
				Load    float64 `json:"max_loadavg_1m"`
				Error   string  `json:"error"`
			} `json:"points"`
			RR []struct {
				Case   string  `json:"case"`
				Target float64 `json:"target_bps"`
				Mode   string  `json:"mode"`
				P50    float64 `json:"median_p50_ms"`
				P99    float64 `json:"median_p99_ms"`
				Ideal  float64 `json:"fair_share_ideal_ms"`
				Error  string  `json:"error"`
			} `json:"request_response"`
			UDP []struct {
				Case   string    `json:"case"`
				Target float64   `json:"target_bps"`
				Mode   string    `json:"mode"`
				Ratio  float64   `json:"median_ratio"`
				Ratios []float64 `json:"ratios"`
				Error  string    `json:"error"`
			} `json:"udp_2x"`
		} `json:"pacing"`
	}
	if err := readJSON(path, &d); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s, %.0f s per point, %d repetitions (median; wire min–max), all modes interleaved in one run. "+
		"Ping p99 added = p99 under load − idle p99 (%.3f ms).\n\n", d.Started, d.Config.Duration, d.Config.Reps, d.Pacing.Idle)
	b.WriteString("| case, target, streams | mode | wire ratio [min–max] | first second | 100 ms p5–p95 | retransmitted (median %, segments) | policer drops per rep | ping p99 added, ms | load |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range d.Pacing.Points {
		label := fmt.Sprintf("%s %s, %d", p.Case, rateName(p.Target), p.Streams)
		if p.Ratio == 0 {
			fmt.Fprintf(&b, "| %s | %s | error: %s | | | | | | |\n", label, p.Mode, p.Error)
			continue
		}
		bins := "–"
		if p.P95 > 0 {
			bins = fmt.Sprintf("%.2f–%.2f", p.P5, p.P95)
		}
		// Per repetition: a read of kubeshaper status that failed on the
		// loaded machine was recorded as 0 by the first runs, -1 since.
		drops := "–"
		if p.Mode != "kernel-tbf" && p.Mode != "cni" && p.Mode != "none+fqrate" {
			var ds []string
			for _, r := range p.Reps {
				if r.Drops < 0 {
					ds = append(ds, "?")
				} else {
					ds = append(ds, fmt.Sprint(r.Drops))
				}
			}
			drops = strings.Join(ds, ", ")
		}
		mode := p.Mode
		if mode == "drop+pacing" {
			mode = "**drop+pacing** (default)"
		}
		fmt.Fprintf(&b, "| %s | %s | %.4f [%.4f–%.4f] | %.2f | %s | %.3f %% (%.0f) | %s | %.3f | %.1f |\n",
			label, mode, p.Ratio, p.Min, p.Max, p.First, bins, p.RetransPct, p.Retrans, drops, math.Max(0, p.Ping-d.Pacing.Idle), p.Load)
	}
	if len(d.Pacing.RR) > 0 {
		fmt.Fprintf(&b, "\nRequest/response: %d KB exchanges on a second connection of the pod while one bulk flow saturates the limit "+
			"(ideal = %d KB at half the rate, wire bytes):\n\n", d.Config.RRSize>>10, d.Config.RRSize>>10)
		b.WriteString("| case, target | mode | p50 ms | p99 ms | p99 / ideal |\n|---|---|---|---|---|\n")
		for _, r := range d.Pacing.RR {
			if r.Error != "" && r.P99 == 0 {
				fmt.Fprintf(&b, "| %s %s | %s | error: %s | | |\n", r.Case, rateName(r.Target), r.Mode, r.Error)
				continue
			}
			fmt.Fprintf(&b, "| %s %s | %s | %.1f | %.1f | %.2f |\n", r.Case, rateName(r.Target), r.Mode, r.P50, r.P99, r.P99/r.Ideal)
		}
	}
	if len(d.Pacing.UDP) > 0 {
		b.WriteString("\nUDP offered at 2× the limit (nothing paces it: the policer holds it):\n\n| case, target | mode | wire ratio (median) | reps |\n|---|---|---|---|\n")
		for _, u := range d.Pacing.UDP {
			var rs []string
			for _, r := range u.Ratios {
				rs = append(rs, fmt.Sprintf("%.4f", r))
			}
			fmt.Fprintf(&b, "| %s %s | %s | %.4f | %s |\n", u.Case, rateName(u.Target), u.Mode, u.Ratio, strings.Join(rs, ", "))
		}
	}
	return b.String(), nil
}
