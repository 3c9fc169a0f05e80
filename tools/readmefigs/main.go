// Command readmefigs renders the benchmark figures under docs/bench into
// README.md, between <!-- BENCH-X --> markers, so that the README always
// quotes the committed measurements and never a hand-copied number.
//
//	go run ./tools/readmefigs        (make readme-figures)
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		fail(err)
	}
	out := string(readme)
	sections := map[string]func() (string, error){
		"BENCH-RATE":          rateTable,
		"BENCH-LATENCY":       latencyTable,
		"BENCH-LOSS":          lossTable,
		"BENCH-PROG":          progTable,
		"BENCH-AGENT":         agentTable,
		"BENCH-MONITORING":    monitoringTable,
		"BENCH-RELIABILITY":   reliabilityTable,
		"BENCH-KERNELS":       kernelsTable,
		"BENCH-CNI":           cniTable,
		"BENCH-CNI-BEFORE":    cniBeforeTable,
		"BENCH-PLUGIN":        pluginStatus,
		"BENCH-LINT":          lintRun,
		"BENCH-PACING":        pacingTables,
		"BENCH-PACING-RATES":  pacingRatesTables,
		"BENCH-PACING-GUEST":  pacingGuestTable,
		"BENCH-PACING-FQRATE": pacingFQRateTables,
		"BENCH-COEXIST":       coexistTable,
		"BENCH-MEMORY":        memoryTable,
		"BENCH-AGENT-GUEST":   agentGuestTable,
	}
	names := make([]string, 0, len(sections))
	for n := range sections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		body, err := sections[name]()
		if err != nil {
			fmt.Fprintf(os.Stderr, "readmefigs: %s: %v (left as it was)\n", name, err)
			continue
		}
		out, err = replace(out, name, body)
		if err != nil {
			fail(err)
		}
	}
	if err := os.WriteFile("README.md", []byte(out), 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "readmefigs:", err)
	os.Exit(1)
}

// replace puts body after the marker, replacing a previous rendering (which
// ends with the matching END marker).
func replace(doc, name, body string) (string, error) {
	start := "<!-- " + name + " -->"
	end := "<!-- /" + name + " -->"
	i := strings.Index(doc, start)
	if i < 0 {
		return doc, fmt.Errorf("README.md has no %s marker", start)
	}
	rest := doc[i+len(start):]
	if j := strings.Index(rest, end); j >= 0 {
		rest = rest[j+len(end):]
	}
	return doc[:i] + start + "\n" + strings.TrimRight(body, "\n") + "\n" + end + rest, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

type datapath struct {
	Started string `json:"started"`
	Config  struct {
		Reps     int `json:"reps"`
		Duration int `json:"duration_s"`
	} `json:"config"`
	Rate []struct {
		Direction  string  `json:"direction"`
		Target     float64 `json:"target_bps"`
		Mode       string  `json:"mode"`
		Ratio      float64 `json:"ratio"`
		MinRatio   float64 `json:"min_ratio"`
		MaxRatio   float64 `json:"max_ratio"`
		FirstRatio float64 `json:"first_second_ratio"`
		Error      string  `json:"error"`
	} `json:"rate"`
	Latency []struct {
		Direction string  `json:"direction"`
		Target    float64 `json:"target_bps"`
		Mode      string  `json:"mode"`
		P50       float64 `json:"p50_ms"`
		P99       float64 `json:"p99_ms"`
		Loss      float64 `json:"ping_loss_pct"`
		Error     string  `json:"error"`
	} `json:"latency"`
	Loss []struct {
		Dist     string   `json:"distribution"`
		Param    float64  `json:"param"`
		Expected float64  `json:"expected"`
		Measured float64  `json:"measured"`
		Sent     int      `json:"sent"`
		Z        *float64 `json:"z"`
		Error    string   `json:"error"`
	} `json:"loss"`
}

func loadDatapath() (*datapath, error) {
	var d datapath
	return &d, readJSON("docs/bench/datapath.json", &d)
}

func rateName(bps float64) string {
	switch {
	case bps >= 1e9:
		return strconv.FormatFloat(bps/1e9, 'f', -1, 64) + "G"
	case bps >= 1e6:
		return strconv.FormatFloat(bps/1e6, 'f', -1, 64) + "M"
	}
	return strconv.FormatFloat(bps, 'f', -1, 64)
}

func rateTable() (string, error) {
	d, err := loadDatapath()
	if err != nil {
		return "", err
	}
	modes := []string{}
	seen := map[string]bool{}
	type cell struct {
		ratio, lo, hi, first float64
		err                  string
	}
	cells := map[string]cell{}
	var rows []string
	rowSeen := map[string]bool{}
	for _, r := range d.Rate {
		if !seen[r.Mode] {
			seen[r.Mode] = true
			modes = append(modes, r.Mode)
		}
		row := r.Direction + " " + rateName(r.Target)
		if !rowSeen[row] {
			rowSeen[row] = true
			rows = append(rows, row)
		}
		cells[row+"|"+r.Mode] = cell{r.Ratio, r.MinRatio, r.MaxRatio, r.FirstRatio, r.Error}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s, %d s per point, %d repetition(s) (median; min–max when more than one). Each cell: wire ratio (first-second ratio).\n\n", d.Started, d.Config.Duration, d.Config.Reps)
	b.WriteString("| direction, target | " + strings.Join(modes, " | ") + " |\n|---|" + strings.Repeat("---|", len(modes)) + "\n")
	for _, row := range rows {
		b.WriteString("| " + row + " |")
		for _, m := range modes {
			c, ok := cells[row+"|"+m]
			switch {
			case !ok:
				b.WriteString(" – |")
			case c.err != "":
				b.WriteString(" error |")
			case d.Config.Reps > 1:
				fmt.Fprintf(&b, " %.3f [%.3f–%.3f] (%.2f) |", c.ratio, c.lo, c.hi, c.first)
			default:
				fmt.Fprintf(&b, " %.3f (%.2f) |", c.ratio, c.first)
			}
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

func latencyTable() (string, error) {
	d, err := loadDatapath()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| direction, limit | mode | p50 ms | p99 ms | ping loss |\n|---|---|---|---|---|\n")
	for _, l := range d.Latency {
		if l.Error != "" {
			fmt.Fprintf(&b, "| %s %s | %s | error | | |\n", l.Direction, rateName(l.Target), l.Mode)
			continue
		}
		name := l.Direction + " " + rateName(l.Target)
		if l.Mode == "idle" {
			name = "no load"
		}
		fmt.Fprintf(&b, "| %s | %s | %.3g | %.3g | %.1f %% |\n", name, l.Mode, l.P50, l.P99, l.Loss)
	}
	return b.String(), nil
}

func lossTable() (string, error) {
	d, err := loadDatapath()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| rule | expected P(drop) | measured | z |\n|---|---|---|---|\n")
	for _, l := range d.Loss {
		rule := fmt.Sprintf("uniform %g%%", l.Param)
		switch l.Dist {
		case "exponential":
			rule = fmt.Sprintf("exponential %g", l.Param)
		case "none":
			rule = "no rule (baseline)"
		}
		z := "–"
		if l.Z != nil {
			z = fmt.Sprintf("%+.2f", *l.Z)
		}
		if l.Error != "" {
			z = "error"
		}
		fmt.Fprintf(&b, "| %s | %.5f | %.5f | %s |\n", rule, l.Expected, l.Measured, z)
	}
	return b.String(), nil
}

var benchLine = regexp.MustCompile(`^Benchmark(\w+?)-\d+\s+\d+\s+[\d.]+ ns/op\s+([\d.]+) ns/pkt`)

func progTable() (string, error) {
	f, err := os.Open("docs/bench/prog.txt")
	if err != nil {
		return "", err
	}
	defer f.Close()
	vals := map[string][]float64{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		if _, ok := vals[m[1]]; !ok {
			order = append(order, m[1])
		}
		vals[m[1]] = append(vals[m[1]], v)
	}
	med := func(xs []float64) float64 {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	base := 0.0
	if xs := vals["ProgTrivial"]; len(xs) > 0 {
		base = med(xs)
	}
	what := map[string]string{
		"ProgTrivial":             "trivial program (the floor)",
		"ProgNotOurs":             "an interface without a kubeshaper entry",
		"ProgMonitor":             "no rule: counted only",
		"ProgMonitorFlows":        "no rule, counted, with per-flow records",
		"ProgMonitorFlowsLastWay": "the same, the flow in the last way of a full set",
		"ProgBandwidth":           "bandwidth (drop mode)",
		"ProgLoss":                "loss",
		"ProgAll":                 "bandwidth + loss + counters",
		"ProgPace":                "pace (EDT)",
		"ProgLossPortMatch":       "loss targeted at a port, packet matches",
		"ProgLossPortMiss":        "loss targeted at a port, packet does not match",
		"ProgLossPeerMatch":       "loss targeted at peers (LPM trie), packet matches",
		"ProgGilbert":             "Gilbert-Elliott loss",
		"ProgMonitorParallel":     "counted only, on every CPU at once (one interface)",
	}
	// Goals (issue 12), over the trivial program; flows: over counted only.
	goal := map[string]string{
		"ProgMonitor":             "≤ +20",
		"ProgAll":                 "≤ +60",
		"ProgMonitorFlows":        "≤ counted + 20",
		"ProgMonitorFlowsLastWay": "≤ counted + 20",
	}
	var b strings.Builder
	b.WriteString("| program path | ns/packet | over the trivial program | goal |\n|---|---|---|---|\n")
	for _, n := range order {
		m := med(vals[n])
		label := what[n]
		if label == "" {
			label = n
		}
		fmt.Fprintf(&b, "| %s | %.0f | +%.0f | %s |\n", label, m, m-base, goal[n])
	}
	return b.String(), nil
}

func agentTable() (string, error) {
	var a map[string]float64
	if err := readJSON("docs/bench/agent.json", &a); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| figure | measured | goal |\n|---|---|---|\n")
	rows := []struct{ key, label, unit, goal string }{
		{"startup_reconcile_ms", "start-up reconcile of 250 pods", "ms", "≤ 1000 ms"},
		{"restart_reconcile_ms", "restart adopting 250 pinned rules", "ms", ""},
		{"annotate_to_map_p50_ms", "annotate → rule in the kernel map, p50 (200 changes)", "ms", ""},
		{"annotate_to_map_p99_ms", "annotate → rule in the kernel map, p99", "ms", "≤ 200 ms"},
		{"rss_after_start_kib", "agent RSS at 250 pods", "KiB", "≤ 40 MiB"},
		{"rss_after_changes_kib", "agent RSS after the 200 changes", "KiB", ""},
		{"cleanup_250_pods_ms", "SIGTERM cleanup of 250 pods", "ms", "≤ 2000 ms"},
	}
	for _, r := range rows {
		v, ok := a[r.key]
		if !ok {
			continue
		}
		val := fmt.Sprintf("%.0f %s", v, r.unit)
		if r.unit == "KiB" {
			val = fmt.Sprintf("%.1f MiB", v/1024)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.label, val, r.goal)
	}
	return b.String(), nil
}
