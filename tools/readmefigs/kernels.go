package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// kernelsTable renders docs/bench/kernels.md, the summary `make
// bench-kernels` copies from tools/kernels (its results.md, unchanged):
// the per-kernel pass/fail table as the runner printed it, then one matrix
// of the pace and delay figures its FIGURE lines carry.
func kernelsTable() (string, error) {
	f, err := os.Open("docs/bench/kernels.md")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var (
		table   []string
		notes   []string
		kernels []string
		cells   = map[string]map[string]string{} // row → kernel → cell
		rows    []string
		cur     string
	)
	addCell := func(row, cell string) {
		if cells[row] == nil {
			cells[row] = map[string]string{}
			rows = append(rows, row)
		}
		cells[row][cur] = cell
	}
	pace := regexp.MustCompile(`^- (pace (?:ingress|egress) \S+): ([0-9.]+) Mbit/s on the wire \(([-+][0-9.]+%)`)
	delay := regexp.MustCompile(`^- delay (\S+): added ([-0-9.]+) ms \(([-+][0-9.]+%)`)
	spread := regexp.MustCompile(`spread ±([0-9.]+) ms \(([-+][0-9.]+%)\)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "|"):
			table = append(table, line)
		case strings.HasPrefix(line, "kernels fetched"), strings.HasPrefix(line, "Measured"):
			notes = append(notes, line)
		case strings.HasPrefix(line, "Figures on "):
			cur = strings.TrimSuffix(strings.TrimPrefix(line, "Figures on "), ":")
			kernels = append(kernels, cur)
		case cur != "" && pace.MatchString(line):
			m := pace.FindStringSubmatch(line)
			addCell(m[1], fmt.Sprintf("%s (%s)", m[2], m[3]))
		case cur != "" && delay.MatchString(line):
			m := delay.FindStringSubmatch(line)
			cell := fmt.Sprintf("%s (%s)", m[2], m[3])
			if s := spread.FindStringSubmatch(line); s != nil {
				cell += fmt.Sprintf(", ±%s (%s)", s[1], s[2])
			}
			if strings.Contains(line, "FAILED") {
				cell += " ✗"
			}
			addCell("delay "+m[1], cell)
		case strings.HasPrefix(line, "Failed on "), strings.HasPrefix(line, "Skipped on "):
			cur = ""
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(table) == 0 {
		return "", fmt.Errorf("docs/bench/kernels.md has no results table")
	}
	var b strings.Builder
	b.WriteString(strings.Join(table, "\n") + "\n\n")
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	if len(rows) > 0 {
		b.WriteString("\nPace: wire rate in Mbit/s (error); delay: added ms (error), with jitter its spread (error); ✗ failed.\n\n")
		b.WriteString("| | " + strings.Join(kernels, " | ") + " |\n|---|" + strings.Repeat("--:|", len(kernels)) + "\n")
		for _, r := range rows {
			b.WriteString("| " + r)
			for _, k := range kernels {
				b.WriteString(" | " + cells[r][k])
			}
			b.WriteString(" |\n")
		}
	}
	return b.String(), nil
}
