package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// report is docs/bench/datapath.json.
type report struct {
	Started  string            `json:"started"`
	ElapsedS float64           `json:"elapsed_s"`
	Host     host              `json:"host"`
	CLI      *cliInfo          `json:"kubeshaper_cli,omitempty"`
	Config   *config           `json:"config"`
	Topology map[string]string `json:"topology"`
	Method   map[string]string `json:"method"`
	Rate     []*ratePoint      `json:"rate,omitempty"`
	Latency  []*latPoint       `json:"latency,omitempty"`
	Loss     []*lossPoint      `json:"loss,omitempty"`
	Pacing   *pacingReport     `json:"pacing,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
}

type host struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Iperf3 string `json:"iperf3"`
}

// cliInfo identifies the kubeshaper binary that was measured.
type cliInfo struct {
	Path     string `json:"path"`
	Modified string `json:"modified"`
	SHA256   string `json:"sha256"`
	GitHead  string `json:"repo_git_head,omitempty"`
	Error    string `json:"error,omitempty"`
}

func describeCLI(path, cliErr string) *cliInfo {
	ci := &cliInfo{Path: path, Error: cliErr}
	if st, err := os.Stat(path); err == nil {
		ci.Modified = st.ModTime().UTC().Format(time.RFC3339)
	}
	if data, err := os.ReadFile(path); err == nil {
		ci.SHA256 = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	if out, err := runCmd(5*time.Second, "git", "rev-parse", "--short", "HEAD"); err == nil {
		ci.GitHead = strings.TrimSpace(out)
	}
	return ci
}

func hostInfo() host {
	h := host{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := runCmd(5*time.Second, "iperf3", "--version"); err == nil {
		h.Iperf3 = firstLine(out)
		h.Iperf3 = strings.TrimSuffix(h.Iperf3, " …")
	}
	return h
}

var method = map[string]string{
	"wire_rate": "rx_bytes and rx_packets of the receiving pod's eth0 (pod B for egress, pod A for ingress), read through netlink in that pod's netns every 50 ms with monotonic timestamps, independently of kubeshaper. " +
		"A veth counts one GSO skb as one packet with one set of headers; wire bytes = bytes + (segments - packets) * 66, segments = (bytes - packets*66) / 1448 (TCP/IPv4 with timestamps, MTU 1500), so the figure is L2 bytes as tbf counts them.",
	"steady_window":  "from the first sample 1 s after the first data (first 50 ms interval with > 3000 bytes) to the last sample with data",
	"first_second":   "wire rate over the first second of data; peak_100ms: highest wire rate over ~100 ms within that second",
	"control":        "iperf3's control connection shares the path; it carries a few hundred bytes per test, below the 3000-byte data threshold and < 0.01 % of the smallest transfer",
	"kernel_tbf":     "pod egress: tc qdisc replace dev eth0 root tbf (in pod A's netns); pod ingress: on the host veth root (node netns); burst = rate x 200 ms, latency 50ms",
	"latency":        "ping -i 0.01 from pod A to pod B, started 2 s after pod A's iperf3 flow in the given direction; nearest-rank p50/p99",
	"loss":           "Go UDP sender in the sending pod, receiver in the other, datagrams carry magic + run id + sequence number; only distinct sequence numbers of this run are counted",
	"interleaving":   "for each repetition, for each rate and direction, the modes run one after the other (A,B,C,A,B,C...)",
	"iperf3_goodput": "iperf3's own receiver-side average payload rate, for reference only (not used for rates)",
}

func (b *bench) writeJSON() error {
	b.report.Method = method
	j, err := json.MarshalIndent(b.report, "", "  ")
	if err != nil {
		return err
	}
	name := b.cfg.Name
	if name == "" {
		name = "datapath"
	}
	p := filepath.Join(b.cfg.Out, name+".json")
	if err := os.WriteFile(p, append(j, '\n'), 0o644); err != nil {
		return err
	}
	b.wrote(p)
	return nil
}

func (b *bench) wrote(p string) {
	for _, w := range b.written {
		if w == p {
			return
		}
	}
	b.written = append(b.written, p)
}

// printf prints a table line on stdout and keeps it for datapath.txt.
func (b *bench) printf(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	fmt.Print(s)
	b.tables.WriteString(s)
}

// writeTables saves the tables printed so far as datapath.txt.
func (b *bench) writeTables() error {
	name := b.cfg.Name
	if name == "" {
		name = "datapath"
	}
	p := filepath.Join(b.cfg.Out, name+".txt")
	if err := os.WriteFile(p, []byte(b.tables.String()), 0o644); err != nil {
		return err
	}
	b.wrote(p)
	return nil
}
