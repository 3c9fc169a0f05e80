package main

import (
	"fmt"
	"strings"
)

// cniTable renders docs/bench/cni.json (make e2e-cni: tests/e2ecni under
// each real CNI and mode): one row per CNI × mode, the measured ratio to
// the rule's target in each cell.
func cniTable() (string, error) { return cniMatrix("docs/bench/cni.json") }

// cniBeforeTable renders docs/bench/cni-before.json: the same matrix with
// the agent as it was before issue 11 (no tcx head, no pod-side move, no
// enforced:false).
func cniBeforeTable() (string, error) { return cniMatrix("docs/bench/cni-before.json") }

func cniMatrix(path string) (string, error) {
	type cell struct {
		Name     string  `json:"name"`
		Ratio    float64 `json:"ratio"`
		Holds    bool    `json:"holds"`
		Verdict  string  `json:"verdict"`
		Enforced *bool   `json:"enforced"`
		Reason   string  `json:"reason"`
		Error    string  `json:"error"`
		Attach   string  `json:"attachment"`
		First    float64 `json:"first_ratio"`
		Hooks    string  `json:"hooks"`
	}
	var doc struct {
		Runs []struct {
			CNI      string  `json:"cni"`
			Mode     string  `json:"mode"`
			Detail   string  `json:"detail"`
			Date     string  `json:"date"`
			Load     string  `json:"load"`
			Unshaped float64 `json:"unshaped_bits"`
			Error    string  `json:"error"`
			Cells    []cell  `json:"cells"`
		} `json:"runs"`
		ClusterDown map[string]string `json:"cluster_down"`
	}
	if err := readJSON(path, &doc); err != nil {
		return "", err
	}
	show := func(c *cell) string {
		if c == nil {
			return "—"
		}
		if c.Error != "" {
			return "error"
		}
		r := fmt.Sprintf("%.2f", c.Ratio)
		if c.Ratio >= 10 {
			r = fmt.Sprintf("%.0f×", c.Ratio)
		}
		switch {
		case c.Holds:
			return r
		case c.Enforced != nil && !*c.Enforced:
			return "**" + r + "** (enforced:false)"
		default:
			return "**" + r + "** silent"
		}
	}
	var b strings.Builder
	b.WriteString("| CNI | mode | egress limit | ingress limit | loss | counters | same-node egress / ingress | Service | egress after the CNI's restart |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	var notes []string
	for _, r := range doc.Runs {
		mode := r.Mode
		if mode == "-" || mode == "" {
			mode = "—"
		}
		if r.Error != "" || len(r.Cells) == 0 {
			msg := r.Error
			if msg == "" {
				msg = "no measurement (see .cluster/e2e-cni)"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | | | | | | |\n", r.CNI, mode, msg)
			continue
		}
		get := func(name string) *cell {
			for i := range r.Cells {
				if r.Cells[i].Name == name {
					return &r.Cells[i]
				}
			}
			return nil
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |\n", r.CNI, mode,
			show(get("egress")), show(get("ingress")), show(get("loss")), show(get("counters")),
			show(get("same-node egress")), show(get("same-node ingress")), show(get("service")),
			show(get("egress after CNI restart")))
		n := fmt.Sprintf("%s/%s: %s, unshaped %.1f Gbit/s, load %s", r.CNI, mode, r.Date, r.Unshaped/1e9, r.Load)
		if r.Detail != "" {
			n += "; " + r.Detail
		}
		for _, name := range []string{"egress", "ingress"} {
			if c := get(name); c != nil && c.Attach != "" {
				n += fmt.Sprintf("; %s enforced at %s", name, c.Attach)
			}
		}
		if c := get("egress"); c != nil && c.Hooks != "" {
			n += "; " + strings.SplitN(c.Hooks, "\n", 2)[0]
		}
		var first []string
		for _, c := range r.Cells {
			if c.First > 1.3 {
				first = append(first, fmt.Sprintf("%s %.0f×", c.Name, c.First))
			}
		}
		if len(first) > 0 {
			n += "; in the first 4 s after the rule, before the agent's judgement moved it: " + strings.Join(first, ", ")
		}
		for _, c := range r.Cells {
			if !c.Holds && c.Reason != "" {
				n += fmt.Sprintf("; %s: %s", c.Name, c.Reason)
			}
		}
		notes = append(notes, n)
	}
	b.WriteString("\nEach cell: achieved ÷ target (loss: measured ÷ 1 %; counters: counted ÷ sent). Rates are TCP " +
		"goodput, what the receiving application read from its first byte to its last; the limit counts frames on the " +
		"wire, so a limit held exactly reads about 0.96 (1448 payload bytes per 1514-byte frame). " +
		"Each rate is one 4 s TCP run. The ingress limit's sender is the peer outside the node (the bridge's is the node " +
		"itself, whose sockets kubeshaper paces): nothing paces it, the drop policer holds it, and the run includes the " +
		"bucket's burst (500 ms of the rate, at most +12.5 % over 4 s). " +
		"Plain = holds; **bold** = bypassed, with whether `kubeshaper status` said `enforced: false` or stayed silent.\n\n")
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	for _, k := range []string{"bridge", "flannel", "cilium"} {
		if v, ok := doc.ClusterDown[k]; ok {
			lines := strings.Split(strings.TrimSpace(v), "\n")
			fmt.Fprintf(&b, "- cluster-down after %s: %s\n", k, strings.Join(lines[1:], "; "))
		}
	}
	return b.String(), nil
}
