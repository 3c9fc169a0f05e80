package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The pacing section (issue 13, `make bench-pacing`): TCP under a limit,
// every way of enforcing it side by side in one run. Cases: pod egress;
// pod ingress with the sender a pod on this node (pod B, known to
// kubeshaper: it is applied with no rule, as the agent does with every
// pod); pod ingress with the sender off the node (pod B unknown to
// kubeshaper: nothing can pace it, as for a sender on another machine).

var pacingModes = map[string]bool{"drop": true, "drop+pacing": true, "tbf": true, "pace": true, "kernel-tbf": true, "cni": true,
	// The first table: the application paces its own socket
	// (iperf3 --fq-rate) at the target with no rule, or at 0.94× the
	// target under the policer alone or under drop+pacing (which must
	// not raise it).
	"none+fqrate": true, "drop+fqrate94": true, "drop+pacing+fqrate94": true}

// appFQRate is the pacing rate the application sets itself in mode m
// (iperf3 --fq-rate, payload bits/s), 0 for none.
func appFQRate(m string, target uint64) uint64 {
	switch m {
	case "none+fqrate":
		return target
	case "drop+fqrate94", "drop+pacing+fqrate94":
		return target * 94 / 100
	}
	return 0
}

type paceRep struct {
	Rep int `json:"rep"`
	flowRate
	Bins100ms   []float64 `json:"bins_100ms_bps"` // wire rate in consecutive 100 ms bins from the first data
	P5Ratio     float64   `json:"p5_100ms_ratio"` // 100 ms bins after the first second, 5th percentile / target
	P95Ratio    float64   `json:"p95_100ms_ratio"`
	OutSegs     uint64    `json:"sender_out_segs"`
	RetransSegs uint64    `json:"sender_retrans_segs"`
	RetransPct  float64   `json:"retrans_pct"`
	TCDrops     int64     `json:"kubeshaper_bandwidth_drops"` // -1: kubeshaper status could not be read
	PingP50Ms   float64   `json:"ping_p50_ms"`
	PingP99Ms   float64   `json:"ping_p99_ms"`
	PingLossPct float64   `json:"ping_loss_pct"`
	Load1       float64   `json:"loadavg_1m"`
	Error       string    `json:"error,omitempty"`
}

type pacePoint struct {
	Case          string    `json:"case"` // egress, ingress, ingress-offnode
	Streams       int       `json:"streams"`
	TargetBps     uint64    `json:"target_bps"`
	Mode          string    `json:"mode"`
	Command       string    `json:"command,omitempty"`
	Reps          []paceRep `json:"reps"`
	Ratio         float64   `json:"ratio"`
	MinRatio      float64   `json:"min_ratio"`
	MaxRatio      float64   `json:"max_ratio"`
	FirstSecRatio float64   `json:"first_second_ratio"`
	P5Ratio       float64   `json:"p5_100ms_ratio"`
	P95Ratio      float64   `json:"p95_100ms_ratio"`
	RetransPct    float64   `json:"retrans_pct"`
	Retrans       float64   `json:"retrans_segs"`
	TCDrops       float64   `json:"kubeshaper_bandwidth_drops"`
	PingP99Ms     float64   `json:"ping_p99_ms"`
	MaxLoad1      float64   `json:"max_loadavg_1m"`
	Error         string    `json:"error,omitempty"`
}

type rrPoint struct {
	Case      string     `json:"case"`
	TargetBps uint64     `json:"target_bps"`
	Mode      string     `json:"mode"`
	Reps      []rrResult `json:"reps"`
	P99Ms     float64    `json:"median_p99_ms"`
	P50Ms     float64    `json:"median_p50_ms"`
	IdealMs   float64    `json:"fair_share_ideal_ms"` // size at half the rate (wire bytes)
	Error     string     `json:"error,omitempty"`
}

type udpPoint struct {
	Case      string    `json:"case"`
	TargetBps uint64    `json:"target_bps"`
	Mode      string    `json:"mode"`
	Ratios    []float64 `json:"ratios"`
	Ratio     float64   `json:"median_ratio"`
	Error     string    `json:"error,omitempty"`
}

type pacingReport struct {
	IdlePingP99Ms float64      `json:"idle_ping_p99_ms"`
	Points        []*pacePoint `json:"points"`
	RR            []*rrPoint   `json:"request_response"`
	UDP           []*udpPoint  `json:"udp_2x"`
}

func (b *bench) pacingSection() {
	cfg := b.cfg
	pr := &pacingReport{}
	b.report.Pacing = pr
	pr.IdlePingP99Ms = b.idlePing()
	var points []*pacePoint
	idx := map[string]*pacePoint{}
	key := func(c string, s int, r uint64, m string) string { return fmt.Sprint(c, s, r, m) }
	cases := cfg.PacingCases
	for _, r := range cfg.Rates {
		for _, c := range cases {
			for _, s := range cfg.Streams {
				for _, m := range cfg.Modes {
					if c == "ingress-offnode" && m != "drop+pacing" {
						continue // the same as ingress for every other mode
					}
					p := &pacePoint{Case: c, Streams: s, TargetBps: r, Mode: m}
					points = append(points, p)
					idx[key(c, s, r, m)] = p
				}
			}
		}
	}
	pr.Points = points
	n := cfg.Reps * len(points)
	logf("== pacing: %d transfers of %s, interleaved by mode", n, cfg.Duration)
	i := 0
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, p := range points {
			b.parkIfStopping()
			i++
			rr := b.paceOnce(p, rep)
			p.Reps = append(p.Reps, rr)
			if rr.Error != "" {
				logf("[%d/%d] %s %s %dx %s rep %d: ERROR %s", i, n, p.Case, shortRate(p.TargetBps), p.Streams, p.Mode, rep, rr.Error)
			} else {
				logf("[%d/%d] %s %s %dx %s rep %d: wire %.4f, first s %.2f, 100ms p5-p95 %.2f-%.2f, retrans %.3f%% (%d), drops %d, ping p99 %.2f ms, load %.1f",
					i, n, p.Case, shortRate(p.TargetBps), p.Streams, p.Mode, rep, rr.WireBps/float64(p.TargetBps), rr.FirstSecBps/float64(p.TargetBps),
					rr.P5Ratio, rr.P95Ratio, rr.RetransPct, rr.RetransSegs, rr.TCDrops, rr.PingP99Ms, rr.Load1)
			}
		}
		if err := b.writeJSON(); err != nil {
			logf("writing JSON: %v", err)
		}
	}
	for _, p := range points {
		p.summarise()
	}
	if cfg.RRDuration > 0 {
		b.rrSection(pr)
	}
	if cfg.UDPDuration > 0 {
		b.udpSection(pr)
	}
	b.printPacing()
}

// senderNS is the netns whose sockets send the bulk data of case c.
func (b *bench) senderNS(c string) string {
	if c == "egress" {
		return b.topo.A
	}
	return b.topo.B
}

func dirOf(c string) string {
	if c == "egress" {
		return "egress"
	}
	return "ingress"
}

// applyPacingMode puts mode m on pod A for case c.
func (b *bench) applyPacingMode(m, c string, rate uint64) (string, error) {
	cmd, err := b.applyPacingRule(m, c, rate)
	// Pod B is a pod of this node for the same-node case (the agent
	// applies every pod, rule or not; with the CLI, a pod applied while
	// pacing is in use), unknown for the off-node one.
	if err == nil && b.cliErr == "" {
		if c == "ingress" {
			if _, err := b.cli("iface", "apply", b.topo.VethB); err != nil {
				return cmd, err
			}
		} else {
			_, _ = b.cli("iface", "clear", b.topo.VethB)
		}
	}
	return cmd, err
}

func (b *bench) applyPacingRule(m, c string, rate uint64) (string, error) {
	dir := dirOf(c)
	switch m {
	case "kernel-tbf":
		return b.applyBandwidth(modeSpec{Name: m, Kind: m}, dir, rate)
	case "cni":
		return b.cniBandwidth("ADD", dir, rate)
	case "none+fqrate":
		return fmt.Sprintf("(no rule; iperf3 --fq-rate %d)", appFQRate(m, rate)), nil
	}
	val := tcRate(rate) + " " + dir
	switch m {
	case "drop", "drop+fqrate94":
		val += " pacing=off"
	case "tbf", "pace":
		val += " mode=" + m
	}
	args := []string{"iface", "apply", b.topo.VethA, "bandwidth=" + val}
	_, err := b.cli(args...)
	return cliArgv(args...), err
}

func (b *bench) clearPacingMode(m, c string, rate uint64) {
	switch m {
	case "cni":
		if _, err := b.cniBandwidth("DEL", dirOf(c), rate); err != nil {
			b.warn("cni DEL: %v", err)
		}
		// DEL removes the plugin's ifb, not the qdiscs it put on the
		// host veth (in a cluster the veth goes with the pod): remove
		// them, as the next point needs a clean veth.
		_, _ = runCmd(10*time.Second, "tc", "-n", b.topo.Node, "qdisc", "del", "dev", b.topo.VethA, "ingress")
		_, _ = runCmd(10*time.Second, "tc", "-n", b.topo.Node, "qdisc", "del", "dev", b.topo.VethA, "root")
		b.clear(modeSpec{Name: m, Kind: "cni"})
	case "kernel-tbf":
		b.clear(modeSpec{Name: m, Kind: m})
	default:
		b.clear(modeSpec{Name: m, Kind: "drop"})
	}
}

// cniBandwidth runs the CNI bandwidth plugin (containernetworking-plugins,
// as kubelet would through the CNI chain) for pod A inside the node netns:
// tbf on the host veth for what the pod receives, an ifb with tbf fed from
// the host veth's ingress for what it sends. Burst: rate × ktbf-burst.
func (b *bench) cniBandwidth(cmd, dir string, rate uint64) (string, error) {
	plugin := b.cfg.CNIPlugin
	burstBits := b.ktbfBurst(rate) * 8
	bw := map[string]uint64{}
	if dir == "egress" {
		bw["egressRate"], bw["egressBurst"] = rate, burstBits
	} else {
		bw["ingressRate"], bw["ingressBurst"] = rate, burstBits
	}
	hostMAC, podMAC := "", ""
	if l, err := b.topo.hNode.LinkByName(b.topo.VethA); err == nil {
		hostMAC = l.Attrs().HardwareAddr.String()
	}
	if l, err := b.topo.hA.LinkByName("eth0"); err == nil {
		podMAC = l.Attrs().HardwareAddr.String()
	}
	conf := map[string]any{
		"cniVersion":    "1.0.0",
		"name":          "ksb",
		"type":          "bandwidth",
		"runtimeConfig": map[string]any{"bandwidth": bw},
		"prevResult": map[string]any{
			"cniVersion": "1.0.0",
			"interfaces": []map[string]any{
				{"name": b.topo.VethA, "mac": hostMAC},
				{"name": "eth0", "mac": podMAC, "sandbox": "/var/run/netns/" + b.topo.A},
			},
			"ips": []map[string]any{{"address": ipA + "/24", "interface": 1}},
		},
	}
	j, _ := json.Marshal(conf)
	c := exec.Command("ip", "netns", "exec", b.topo.Node, plugin)
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID=ksb"+b.topo.ID, "CNI_NETNS=/var/run/netns/"+b.topo.A,
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(plugin))
	c.Stdin = bytes.NewReader(j)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := children.start(c); err != nil {
		return "", err
	}
	timer := time.AfterFunc(20*time.Second, func() { killGroup(c) })
	err := c.Wait()
	timer.Stop()
	children.done(c)
	desc := fmt.Sprintf("CNI_COMMAND=%s %s <<< %s", cmd, plugin, j)
	if err != nil {
		return desc, fmt.Errorf("%s bandwidth plugin: %v: %s", cmd, err, firstLine(out.String()))
	}
	return desc, nil
}

// snmpTCP reads OutSegs and RetransSegs of netns ns.
func snmpTCP(ns string) (out, retr uint64, err error) {
	s, err := runCmd(5*time.Second, "ip", "netns", "exec", ns, "cat", "/proc/net/snmp")
	if err != nil {
		return 0, 0, err
	}
	var names []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			switch names[i] {
			case "OutSegs":
				out = v
			case "RetransSegs":
				retr = v
			}
		}
	}
	return out, retr, nil
}

func (b *bench) paceOnce(p *pacePoint, rep int) (rr paceRep) {
	rr.Rep = rep
	if err := b.ensureIperfServer(); err != nil {
		rr.Error = err.Error()
		return rr
	}
	cmd, err := b.applyPacingMode(p.Mode, p.Case, p.TargetBps)
	if p.Command == "" {
		p.Command = cmd
		if fq := appFQRate(p.Mode, p.TargetBps); fq > 0 {
			p.Command += fmt.Sprintf("; iperf3 --fq-rate %d per stream", fq/uint64(p.Streams))
		}
	}
	defer b.clearPacingMode(p.Mode, p.Case, p.TargetBps)
	if err != nil {
		rr.Error = "apply: " + err.Error()
		return rr
	}
	sender := b.senderNS(p.Case)
	out0, re0, _ := snmpTCP(sender)
	h, dev := b.receiver(dirOf(p.Case))
	s, err := startSampler(h, dev, b.cfg.SampleEvery)
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	time.Sleep(150 * time.Millisecond)
	args := b.iperfArgs(dirOf(p.Case), b.cfg.Duration)
	if p.Streams > 1 {
		args = append(args, "-P", strconv.Itoa(p.Streams))
	}
	if fq := appFQRate(p.Mode, p.TargetBps); fq > 0 {
		args = append(args, "--fq-rate", strconv.FormatUint(fq/uint64(p.Streams), 10))
	}
	ic := exec.Command("ip", args...)
	var iout bytes.Buffer
	ic.Stdout, ic.Stderr = &iout, &iout
	if err := b.procs.start(ic); err != nil {
		rr.Error = err.Error()
		s.Stop()
		return rr
	}
	// Pings from the second second on, 10 ms apart, while the flow runs.
	time.Sleep(2 * time.Second)
	pings := int((b.cfg.Duration - 4*time.Second) / (10 * time.Millisecond))
	lp := &latPoint{}
	bcfg := b.cfg
	bcfg.Pings, bcfg.PingInterval = pings, 10*time.Millisecond
	(&bench{cfg: bcfg, topo: b.topo}).pingInto(lp)
	_, ierr := b.waitIperf(ic, &iout, b.cfg.Duration)
	time.Sleep(300 * time.Millisecond)
	samples, serr := s.Stop()
	out1, re1, _ := snmpTCP(sender)
	rr.Load1 = loadavg()
	rr.PingP50Ms, rr.PingP99Ms, rr.PingLossPct = lp.P50Ms, lp.P99Ms, lp.LossPct
	if lp.Error != "" {
		rr.Error = lp.Error
	}
	rr.OutSegs, rr.RetransSegs = out1-out0, re1-re0
	if rr.OutSegs > 0 {
		rr.RetransPct = 100 * float64(rr.RetransSegs) / float64(rr.OutSegs)
	}
	if p.Mode != "kernel-tbf" && p.Mode != "cni" && p.Mode != "none+fqrate" {
		rr.TCDrops = b.bandwidthDrops(dirOf(p.Case))
	}
	fr, err := transferRate(samples, iperfErr(ierr), serr)
	rr.flowRate = fr
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	rr.Bins100ms, rr.P5Ratio, rr.P95Ratio = bins100(samples, float64(p.TargetBps))
	return rr
}

// bandwidthDrops reads kubeshaper's bandwidth drops on pod A's veth in
// direction dir (counters start at the apply: iface clear deletes them).
func (b *bench) bandwidthDrops(dir string) int64 {
	raw := b.statusWindow()
	var st []struct {
		Interface  string `json:"interface"`
		Directions []struct {
			Direction string `json:"direction"`
			Drops     map[string]struct {
				Packets uint64 `json:"packets"`
			} `json:"drops"`
		} `json:"directions"`
	}
	if raw == nil || json.Unmarshal(raw, &st) != nil {
		return -1
	}
	for _, s := range st {
		if s.Interface != b.topo.VethA {
			continue
		}
		for _, d := range s.Directions {
			if d.Direction == dir {
				return int64(d.Drops["bandwidth"].Packets)
			}
		}
	}
	return -1
}

func (b *bench) statusWindow() json.RawMessage {
	if b.cliErr != "" {
		return nil
	}
	out, err := b.cli("status", "--json", "--window", "0")
	if err != nil || !json.Valid([]byte(out)) {
		b.warn("kubeshaper status for the drop count: %v", err)
		return nil
	}
	return json.RawMessage(strings.TrimSpace(out))
}

// bins100 cuts the samples into 100 ms bins from the first data and
// returns their rates and the 5th/95th percentile ratios of the bins after
// the first second (full bins only).
func bins100(s []sample, target float64) (bins []float64, p5, p95 float64) {
	first := -1
	last := -1
	for i := 1; i < len(s); i++ {
		if s[i].Bytes-s[i-1].Bytes > dataThreshold {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return nil, 0, 0
	}
	t0 := s[first-1].T
	i := first - 1
	var after []float64
	// Bins end at multiples of 100 ms from t0; the last one ends before
	// the last data interval (only partly filled). A sampling gap longer
	// than a bin (a late sampler on a loaded machine) merges bins: the
	// rate is over the real span between samples.
	for k := 0; ; k++ {
		end := t0 + time.Duration(k+1)*100*time.Millisecond
		if last < 1 || end > s[last-1].T {
			break
		}
		j := i
		for j < last && s[j].T < end {
			j++
		}
		if j == i {
			continue // inside a gap: the next bin spans it
		}
		dt := (s[j].T - s[i].T).Seconds()
		v := wireBytes(s[j].Bytes-s[i].Bytes, s[j].Pkts-s[i].Pkts) * 8 / dt
		bins = append(bins, math.Round(v))
		if s[i].T-t0 >= time.Second {
			after = append(after, v/target)
		}
		i = j
	}
	if len(after) == 0 {
		return bins, 0, 0
	}
	return bins, percentile(after, 5), percentile(after, 95)
}

func (p *pacePoint) summarise() {
	var wire, first, p5, p95, rpct, retr, drops, ping []float64
	var errs []string
	for _, r := range p.Reps {
		p.MaxLoad1 = math.Max(p.MaxLoad1, r.Load1)
		if r.Error != "" {
			errs = append(errs, r.Error)
			continue
		}
		t := float64(p.TargetBps)
		wire = append(wire, r.WireBps/t)
		first = append(first, r.FirstSecBps/t)
		p5 = append(p5, r.P5Ratio)
		p95 = append(p95, r.P95Ratio)
		rpct = append(rpct, r.RetransPct)
		retr = append(retr, float64(r.RetransSegs))
		if r.TCDrops >= 0 {
			drops = append(drops, float64(r.TCDrops))
		}
		ping = append(ping, r.PingP99Ms)
	}
	if len(errs) > 0 {
		p.Error = fmt.Sprintf("%d of %d reps failed: %s", len(errs), len(p.Reps), errs[0])
	}
	if len(wire) == 0 {
		return
	}
	p.Ratio, p.MinRatio, p.MaxRatio = medMinMax(wire)
	p.FirstSecRatio, _, _ = medMinMax(first)
	p.P5Ratio, _, _ = medMinMax(p5)
	p.P95Ratio, _, _ = medMinMax(p95)
	p.RetransPct, _, _ = medMinMax(rpct)
	p.Retrans, _, _ = medMinMax(retr)
	p.TCDrops = -1
	if len(drops) > 0 {
		p.TCDrops, _, _ = medMinMax(drops)
	}
	p.PingP99Ms, _, _ = medMinMax(ping)
}

// idlePing is ping p99 with no rule and no load (the baseline of "added").
func (b *bench) idlePing() float64 {
	lp := &latPoint{}
	bcfg := b.cfg
	bcfg.Pings, bcfg.PingInterval = 300, 10*time.Millisecond
	(&bench{cfg: bcfg, topo: b.topo}).pingInto(lp)
	return lp.P99Ms
}

// rrSection: one bulk iperf3 stream plus the request/response client on a
// second connection, per mode and direction (same-node sender).
func (b *bench) rrSection(pr *pacingReport) {
	cfg := b.cfg
	srv := exec.Command("ip", "netns", "exec", b.topo.B, selfExe(), "rr-server", "-listen", fmt.Sprintf("%s:%d", ipB, rrPort))
	if err := b.procs.start(srv); err != nil {
		logf("rr-server: %v", err)
		return
	}
	go func() { _ = srv.Wait(); b.procs.done(srv) }()
	time.Sleep(300 * time.Millisecond)
	for _, r := range cfg.Rates {
		for _, c := range []string{"egress", "ingress"} {
			for _, m := range cfg.Modes {
				p := &rrPoint{Case: c, TargetBps: r, Mode: m,
					IdealMs: float64(cfg.RRSize) * 1514 / 1448 * 8 / (float64(r) / 2) * 1000}
				pr.RR = append(pr.RR, p)
			}
		}
	}
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, p := range pr.RR {
			b.parkIfStopping()
			res, err := b.rrOnce(p)
			if err != nil {
				p.Error = err.Error()
				logf("rr %s %s %s rep %d: ERROR %v", p.Case, shortRate(p.TargetBps), p.Mode, rep, err)
				continue
			}
			p.Reps = append(p.Reps, res)
			logf("rr %s %s %s rep %d: %d exchanges, p50 %.1f ms, p99 %.1f ms (ideal %.1f)", p.Case, shortRate(p.TargetBps), p.Mode, rep, res.N, res.P50Ms, res.P99Ms, p.IdealMs)
		}
	}
	for _, p := range pr.RR {
		var p99, p50 []float64
		for _, r := range p.Reps {
			p99 = append(p99, r.P99Ms)
			p50 = append(p50, r.P50Ms)
		}
		if len(p99) > 0 {
			p.P99Ms, _, _ = medMinMax(p99)
			p.P50Ms, _, _ = medMinMax(p50)
		}
	}
}

const rrPort = 9912

func selfExe() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}

func (b *bench) rrOnce(p *rrPoint) (rrResult, error) {
	if err := b.ensureIperfServer(); err != nil {
		return rrResult{}, err
	}
	if _, err := b.applyPacingMode(p.Mode, p.Case, p.TargetBps); err != nil {
		b.clearPacingMode(p.Mode, p.Case, p.TargetBps)
		return rrResult{}, err
	}
	defer b.clearPacingMode(p.Mode, p.Case, p.TargetBps)
	d := b.cfg.RRDuration
	ic := exec.Command("ip", b.iperfArgs(p.Case, d+3*time.Second)...)
	var iout bytes.Buffer
	ic.Stdout, ic.Stderr = &iout, &iout
	if err := b.procs.start(ic); err != nil {
		return rrResult{}, err
	}
	time.Sleep(2 * time.Second)
	out, err := runCmd(d+20*time.Second, "ip", "netns", "exec", b.topo.A, selfExe(), "rr-client",
		"-to", fmt.Sprintf("%s:%d", ipB, rrPort), "-size", strconv.Itoa(b.cfg.RRSize), "-dir", p.Case, "-duration", d.String())
	_, _ = b.waitIperf(ic, &iout, d+3*time.Second)
	if err != nil {
		return rrResult{}, err
	}
	var r rrResult
	if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
		return r, fmt.Errorf("rr-client output: %v: %s", err, out)
	}
	return r, nil
}

// udpSection: UDP offered at 2× the limit, which nothing paces: the
// policer must hold it (drop and drop+pacing share it; tbf modes queue).
func (b *bench) udpSection(pr *pacingReport) {
	cfg := b.cfg
	for _, sink := range [][2]string{{b.topo.A, ipA}, {b.topo.B, ipB}} {
		c := exec.Command("ip", "netns", "exec", sink[0], selfExe(), "udp-sink", "-addr", fmt.Sprintf("%s:%d", sink[1], udpPort+1))
		if err := b.procs.start(c); err != nil {
			logf("udp-sink: %v", err)
			return
		}
		go func() { _ = c.Wait(); b.procs.done(c) }()
	}
	for _, r := range cfg.Rates {
		for _, c := range []string{"egress", "ingress"} {
			for _, m := range []string{"drop+pacing"} {
				pr.UDP = append(pr.UDP, &udpPoint{Case: c, TargetBps: r, Mode: m})
			}
		}
	}
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, p := range pr.UDP {
			b.parkIfStopping()
			v, err := b.udpOnce(p)
			if err != nil {
				p.Error = err.Error()
				logf("udp %s %s rep %d: ERROR %v", p.Case, shortRate(p.TargetBps), rep, err)
				continue
			}
			p.Ratios = append(p.Ratios, v)
			logf("udp 2x %s %s %s rep %d: wire %.4f of the target", p.Case, shortRate(p.TargetBps), p.Mode, rep, v)
		}
	}
	for _, p := range pr.UDP {
		if len(p.Ratios) > 0 {
			p.Ratio, _, _ = medMinMax(p.Ratios)
		}
	}
}

func (b *bench) udpOnce(p *udpPoint) (float64, error) {
	if _, err := b.applyPacingMode(p.Mode, p.Case, p.TargetBps); err != nil {
		b.clearPacingMode(p.Mode, p.Case, p.TargetBps)
		return 0, err
	}
	defer b.clearPacingMode(p.Mode, p.Case, p.TargetBps)
	sendNS, to := b.topo.A, ipB
	if p.Case == "ingress" {
		sendNS, to = b.topo.B, ipA
	}
	h, dev := b.receiver(p.Case)
	s, err := startSampler(h, dev, b.cfg.SampleEvery)
	if err != nil {
		return 0, err
	}
	const size = 1400
	// Payload rate for 2× the wire target: 1400 B of payload is 1442 on the wire.
	rate := uint64(float64(p.TargetBps) * 2 * size / (size + 42))
	n := int(float64(rate) / 8 / size * b.cfg.UDPDuration.Seconds())
	_, err = runCmd(b.cfg.UDPDuration+20*time.Second, "ip", "netns", "exec", sendNS, selfExe(), "udp-send",
		"-to", fmt.Sprintf("%s:%d", to, udpPort+1), "-n", strconv.Itoa(n), "-size", strconv.Itoa(size), "-rate", strconv.FormatUint(rate, 10))
	time.Sleep(200 * time.Millisecond)
	samples, serr := s.Stop()
	fr, err := transferRate(samples, err, serr)
	if err != nil {
		return 0, err
	}
	return fr.WireBps / float64(p.TargetBps), nil
}

func (b *bench) printPacing() {
	pr := b.report.Pacing
	b.printf("\n== Pacing (issue 13): TCP through a limit, %s per point, median of %d reps; wire ratio [min..max], first second,\n", b.cfg.Duration, b.cfg.Reps)
	b.printf("   100 ms bins after the first second p5-p95 (ratio), sender's retransmitted segments %% (median count), kubeshaper bandwidth drops,\n")
	b.printf("   ping p99 from pod A during the transfer (idle p99 %.3f ms), max load.\n", pr.IdlePingP99Ms)
	b.printf("%-16s %-6s %-3s %-12s %-24s %-7s %-12s %-18s %-8s %-9s %-5s\n", "case", "target", "str", "mode", "wire ratio", "first", "100ms p5-p95", "retrans", "drops", "ping p99", "load")
	for _, p := range pr.Points {
		if p.Ratio == 0 {
			b.printf("%-16s %-6s %-3d %-12s ERROR: %s\n", p.Case, shortRate(p.TargetBps), p.Streams, p.Mode, p.Error)
			continue
		}
		b.printf("%-16s %-6s %-3d %-12s %-24s %-7.3f %-12s %-18s %-8.0f %-9.3f %-5.1f%s\n", p.Case, shortRate(p.TargetBps), p.Streams, p.Mode,
			fmt.Sprintf("%.4f [%.4f..%.4f]", p.Ratio, p.MinRatio, p.MaxRatio), p.FirstSecRatio,
			fmt.Sprintf("%.2f-%.2f", p.P5Ratio, p.P95Ratio), fmt.Sprintf("%.3f%% (%.0f)", p.RetransPct, p.Retrans),
			p.TCDrops, p.PingP99Ms, p.MaxLoad1, errSuffix(p.Error))
	}
	if len(pr.RR) > 0 {
		b.printf("\n== Request/response: %d KB exchanges on a 2nd connection while a bulk flow saturates the limit; completion ms (median of reps)\n", b.cfg.RRSize>>10)
		b.printf("%-10s %-6s %-12s %-8s %-8s %-10s %-8s\n", "case", "target", "mode", "p50", "p99", "ideal", "p99/ideal")
		for _, p := range pr.RR {
			b.printf("%-10s %-6s %-12s %-8.1f %-8.1f %-10.1f %-8.2f%s\n", p.Case, shortRate(p.TargetBps), p.Mode, p.P50Ms, p.P99Ms, p.IdealMs, p.P99Ms/p.IdealMs, errSuffix(p.Error))
		}
	}
	if len(pr.UDP) > 0 {
		b.printf("\n== UDP offered at 2x the limit (the policer's cap): wire ratio, median of reps\n")
		for _, p := range pr.UDP {
			b.printf("%-10s %-6s %-12s %.4f %v%s\n", p.Case, shortRate(p.TargetBps), p.Mode, p.Ratio, p.Ratios, errSuffix(p.Error))
		}
	}
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " (" + e + ")"
}
