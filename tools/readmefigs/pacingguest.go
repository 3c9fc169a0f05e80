package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// pacingGuestTable renders docs/bench/pacing-guest.md (make
// bench-pacing-guest: tools/kernels' summary of tests/guest
// TestModesSideBySide in a qemu guest with sch_fq): the run's note, its
// pass/fail row, and one table row per FIGURE line.
func pacingGuestTable() (string, error) {
	const path = "docs/bench/pacing-guest.md"
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fig := regexp.MustCompile(`^- modes (\S+) (\S+) ×(\d+) (\S+): wire (\S+) \[(\S+)\], first second (\S+), 100 ms p5–p95 (\S+), ` +
		`retransmitted (\S+) % \((\d+) segments\), drops (.*?), probe RTT added p50 (\S+) ms p99 (\S+) ms, (\d+) × (\S+), longest sampling gap (\S+)(.*)$`)
	var (
		table, notes, rows, failed []string
		kernel                     string
		inFailed                   bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "|"):
			table = append(table, line)
		case strings.HasPrefix(line, "Measured"):
			notes = append(notes, line)
		case strings.HasPrefix(line, "Figures on "):
			kernel = strings.TrimSuffix(strings.TrimPrefix(line, "Figures on "), ":")
			inFailed = false
		case strings.HasPrefix(line, "Failed on "):
			inFailed = true
		case strings.HasPrefix(line, "Skipped on "):
			inFailed = false
		case inFailed && strings.HasPrefix(line, "- "):
			failed = append(failed, strings.TrimPrefix(line, "- "))
		case fig.MatchString(line):
			m := fig.FindStringSubmatch(line)
			mode := m[4]
			switch mode {
			case "drop":
				mode = "drop, pacing=off (the policer alone)"
			case "drop+pacing":
				mode = "**drop+pacing** (default)"
			case "pace":
				mode = "pace (EDT + fq)"
			}
			extra := strings.TrimSpace(m[17])
			rows = append(rows, fmt.Sprintf("| %s %s, %s | %s | %s [%s] | %s | %s | %s %% (%s) | %s | %s / %s | %s × %s | %s%s |",
				m[1], m[2], m[3], mode, m[5], m[6], m[7], m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15], m[16], prefixSpace(extra)))
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(rows) == 0 {
		return "", fmt.Errorf("%s has no figures", path)
	}
	var b strings.Builder
	for _, n := range notes {
		b.WriteString(n + " ")
	}
	fmt.Fprintf(&b, "Kernel %s, qemu TCG guest (2 vCPUs).\n\n", kernel)
	b.WriteString(strings.Join(table, "\n") + "\n\n")
	b.WriteString("| case, target, streams | mode | wire ratio, median [min–max] | first second | 100 ms p5–p95 | retransmitted (median %, segments) | drops per rep (kubeshaper + fq) | probe RTT added p50 / p99, ms | reps × duration | longest sampling gap |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n")
	if len(failed) > 0 {
		b.WriteString("\nFailed: " + strings.Join(failed, "; ") + " (the test's own bounds; see the log).\n")
	}
	return b.String(), nil
}

func prefixSpace(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}
