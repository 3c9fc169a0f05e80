package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// checkCLI finds the kubeshaper CLI; without it, kubeshaper modes become
// error lines.
func (b *bench) checkCLI() {
	st, err := os.Stat(b.cfg.CLI)
	switch {
	case err != nil:
		b.cliErr = fmt.Sprintf("%s not found (build it: go build -o bin/kubeshaper ./cmd/kubeshaper)", b.cfg.CLI)
	case st.IsDir() || st.Mode()&0o111 == 0:
		b.cliErr = fmt.Sprintf("%s is not an executable file", b.cfg.CLI)
	}
	if b.cliErr != "" {
		logf("kubeshaper CLI: %s", b.cliErr)
		return
	}
	logf("kubeshaper CLI: %s", b.cfg.CLI)
}

// cli runs the kubeshaper CLI inside the node netns.
func (b *bench) cli(args ...string) (string, error) {
	if b.cliErr != "" {
		return "", fmt.Errorf("%s", b.cliErr)
	}
	b.cliUsed = true
	full := append([]string{"netns", "exec", b.topo.Node, b.cfg.CLI}, args...)
	return runCmd(30*time.Second, "ip", full...)
}

// cliArgv renders a CLI command line for the report, quoted like a shell.
func cliArgv(args ...string) string {
	out := []string{"kubeshaper"}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && strings.ContainsAny(v, " %;") {
			a = fmt.Sprintf("%s=%q", k, v)
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// ktbfBurst is the kernel-tbf baseline's burst: rate × ktbf-burst time.
func (b *bench) ktbfBurst(rate uint64) uint64 {
	v := uint64(math.Round(float64(rate) / 8 * b.cfg.TBFBurstTime.Seconds()))
	if v < 3028 {
		v = 3028
	}
	return v
}

// applyBandwidth limits pod A's traffic in direction dir to rate with mode
// m. It returns the command it ran, for the report.
func (b *bench) applyBandwidth(m modeSpec, dir string, rate uint64) (string, error) {
	t := b.topo
	switch m.Kind {
	case "none":
		return "(no rule)", nil
	case "kernel-tbf":
		ns, dev := t.A, "eth0" // pod egress: the pod's own eth0 root
		if dir == "ingress" {
			ns, dev = t.Node, t.VethA // pod ingress: the host veth root
		}
		args := []string{"-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
			"rate", tcRate(rate), "burst", fmt.Sprint(b.ktbfBurst(rate)),
			"latency", fmt.Sprintf("%dms", b.cfg.TBFLatency.Milliseconds())}
		_, err := runCmd(10*time.Second, "tc", args...)
		return "tc " + strings.Join(args, " "), err
	}
	val := tcRate(rate) + " " + dir
	if bu := m.burstFor(rate); bu > 0 {
		val += fmt.Sprintf(" burst=%d", bu)
	}
	if m.Kind != "drop" {
		val += " mode=" + m.Kind
	}
	args := []string{"iface", "apply", t.VethA, "bandwidth=" + val}
	_, err := b.cli(args...)
	return cliArgv(args...), err
}

// applyLoss sets a loss rule with the CLI.
func (b *bench) applyLoss(val string) (string, error) {
	args := []string{"iface", "apply", b.topo.VethA, "loss=" + val}
	_, err := b.cli(args...)
	return cliArgv(args...), err
}

// status returns `kubeshaper status --json` if it is valid JSON and small.
func (b *bench) status() json.RawMessage {
	if b.cliErr != "" {
		return nil
	}
	out, err := b.cli("status", "--json")
	if err != nil || len(out) > 16<<10 || !json.Valid([]byte(out)) {
		return nil
	}
	return json.RawMessage(strings.TrimSpace(out))
}

// clear removes whatever a mode applied, then checks that no root qdisc and
// no tc filter is left on the shaped paths (a leftover is a warning, and is
// removed so that the next point starts clean).
func (b *bench) clear(m modeSpec) {
	t := b.topo
	if m.usesCLI() || m.Kind == "loss" {
		if _, err := b.cli("iface", "clear", t.VethA); err != nil && b.cliErr == "" {
			b.warn("kubeshaper iface clear %s: %v", t.VethA, err)
		}
	}
	if m.Kind == "kernel-tbf" {
		_, _ = runCmd(10*time.Second, "tc", "-n", t.A, "qdisc", "del", "dev", "eth0", "root")
		_, _ = runCmd(10*time.Second, "tc", "-n", t.Node, "qdisc", "del", "dev", t.VethA, "root")
	}
	for _, c := range []struct {
		h        *netlink.Handle
		ns, dev  string
		filtered bool
	}{{t.hNode, t.Node, t.VethA, true}, {t.hA, t.A, "eth0", false}} {
		if kind := rootQdisc(c.h, c.dev); kind != "" && kind != "noqueue" {
			b.warn("after %s: root qdisc %s left on %s (netns %s): removing it", m.Name, kind, c.dev, c.ns)
			_, _ = runCmd(10*time.Second, "tc", "-n", c.ns, "qdisc", "del", "dev", c.dev, "root")
		}
		for _, hook := range []string{"ingress", "egress"} {
			out, err := runCmd(10*time.Second, "tc", "-n", c.ns, "filter", "show", "dev", c.dev, hook)
			if err == nil && strings.TrimSpace(out) != "" {
				b.warn("after %s: tc filter left on %s %s (netns %s): %s", m.Name, c.dev, hook, c.ns, firstLine(out))
			}
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// rootQdisc is the kind of dev's root qdisc, "" if it cannot be read.
func rootQdisc(h *netlink.Handle, dev string) string {
	l, err := h.LinkByName(dev)
	if err != nil {
		return ""
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		return ""
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q.Type()
		}
	}
	return "noqueue"
}

func (b *bench) warn(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	logf("WARNING: %s", msg)
	b.report.Warnings = append(b.report.Warnings, msg)
}
