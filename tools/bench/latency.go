package main

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// latPoint is ping RTT from pod A to pod B while pod A's own TCP flow
// saturates the limit in one direction (or idle, without rule or load).
type latPoint struct {
	Direction  string  `json:"direction"`
	TargetBps  uint64  `json:"target_bps"`
	Mode       string  `json:"mode"`
	Command    string  `json:"command,omitempty"`
	Sent       int     `json:"pings_sent"`
	Received   int     `json:"pings_received"`
	LossPct    float64 `json:"ping_loss_pct"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	AddedP99Ms float64 `json:"added_p99_ms"` // p99 − idle p99
	LoadBps    float64 `json:"load_wire_bps,omitempty"`
	Load1      float64 `json:"loadavg_1m"`
	Error      string  `json:"error,omitempty"`
}

func (b *bench) latencySection() {
	cfg := b.cfg
	logf("== latency: %d pings every %s from pod A to pod B, idle and under load at %v × %v × %v",
		cfg.Pings, cfg.PingInterval, ratesStr(cfg.LatRates), cfg.Directions, cfg.Modes)
	idle := &latPoint{Direction: "-", Mode: "idle"}
	b.pingInto(idle)
	b.report.Latency = append(b.report.Latency, idle)
	logf("latency idle: p50 %.3f ms p99 %.3f ms loss %.1f%%", idle.P50Ms, idle.P99Ms, idle.LossPct)
	for _, r := range cfg.LatRates {
		for _, d := range cfg.Directions {
			for _, m := range cfg.modes {
				b.parkIfStopping()
				p := &latPoint{Direction: d, TargetBps: r, Mode: m.Name}
				b.latencyOnce(p, m)
				if p.Error == "" && idle.Error == "" {
					p.AddedP99Ms = p.P99Ms - idle.P99Ms
				}
				b.report.Latency = append(b.report.Latency, p)
				if p.Error != "" {
					logf("latency %s %s %s: ERROR %s", d, shortRate(r), m.Name, p.Error)
				} else {
					logf("latency %s %s %s: p50 %.3f ms p99 %.3f ms loss %.1f%%, load %s",
						d, shortRate(r), m.Name, p.P50Ms, p.P99Ms, p.LossPct, mbps(p.LoadBps))
				}
			}
		}
	}
	b.printLatency()
}

func ratesStr(r []uint64) string {
	s := ""
	for i, v := range r {
		if i > 0 {
			s += ","
		}
		s += shortRate(v)
	}
	return s
}

func (b *bench) latencyOnce(p *latPoint, m modeSpec) {
	if err := b.ensureIperfServer(); err != nil {
		p.Error = err.Error()
		return
	}
	cmd, err := b.applyBandwidth(m, p.Direction, p.TargetBps)
	p.Command = cmd
	defer b.clear(m)
	if err != nil {
		p.Error = "apply: " + err.Error()
		return
	}
	pingTime := time.Duration(b.cfg.Pings) * b.cfg.PingInterval
	load := b.cfg.PingWarmup + pingTime + 2*time.Second
	h, dev := b.receiver(p.Direction)
	s, err := startSampler(h, dev, b.cfg.SampleEvery)
	if err != nil {
		p.Error = err.Error()
		return
	}
	ic, out, err := b.startIperf(p.Direction, load)
	if err != nil {
		_, _ = s.Stop()
		p.Error = "iperf3: " + err.Error()
		return
	}
	time.Sleep(b.cfg.PingWarmup)
	b.pingInto(p)
	_, ierr := b.waitIperf(ic, out, load)
	samples, _ := s.Stop()
	p.Load1 = loadavg()
	if fr, err := analyze(samples); err == nil {
		p.LoadBps = fr.WireBps
	}
	if ierr != nil && p.Error == "" {
		p.Error = "iperf3: " + ierr.Error()
	}
}

var (
	reRTT   = regexp.MustCompile(`time=([0-9.]+) ms`)
	reCount = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
)

// pingInto pings pod B from pod A and fills the RTT figures.
func (b *bench) pingInto(p *latPoint) {
	cfg := b.cfg
	deadline := int(math.Ceil((time.Duration(cfg.Pings)*cfg.PingInterval + 3*time.Second).Seconds()))
	out, err := runCmd(time.Duration(deadline+10)*time.Second, "ip", "netns", "exec", b.topo.A,
		"ping", "-n", "-i", strconv.FormatFloat(cfg.PingInterval.Seconds(), 'f', -1, 64),
		"-c", fmt.Sprint(cfg.Pings), "-w", fmt.Sprint(deadline), "-W", "1", ipB)
	var rtts []float64
	for _, m := range reRTT.FindAllStringSubmatch(out, -1) {
		if v, e := strconv.ParseFloat(m[1], 64); e == nil {
			rtts = append(rtts, v)
		}
	}
	if m := reCount.FindStringSubmatch(out); m != nil {
		p.Sent, _ = strconv.Atoi(m[1])
		p.Received, _ = strconv.Atoi(m[2])
	} else {
		if err == nil {
			err = fmt.Errorf("no ping summary")
		}
		p.Error = "ping: " + err.Error()
		return
	}
	// ping exits 1 when replies are missing: that is loss, not an error.
	if p.Sent > 0 {
		p.LossPct = 100 * float64(p.Sent-p.Received) / float64(p.Sent)
	}
	if len(rtts) == 0 {
		p.Error = "no ping replies"
		return
	}
	p.P50Ms = percentile(rtts, 50)
	p.P99Ms = percentile(rtts, 99)
	p.MaxMs = percentile(rtts, 100)
}

func (b *bench) printLatency() {
	b.printf("\n== Latency at the limit: ping pod A -> pod B every %s (%d pings) while pod A's own iperf3 TCP flow\n", b.cfg.PingInterval, b.cfg.Pings)
	b.printf("   saturates the limit in the given direction (load = its wire rate); added = p99 - idle p99; '!' marks added > 1 ms.\n")
	b.printf("%-8s %-7s %-18s %-9s %-9s %-9s %-9s %-8s %-10s\n", "dir", "target", "mode", "p50 ms", "p99 ms", "max ms", "added", "loss %", "load Mbit/s")
	for _, p := range b.report.Latency {
		t := shortRate(p.TargetBps)
		if p.TargetBps == 0 {
			t = "-"
		}
		if p.Error != "" && p.Received == 0 {
			b.printf("%-8s %-7s %-18s ERROR: %s\n", p.Direction, t, p.Mode, p.Error)
			continue
		}
		flag := ""
		if p.AddedP99Ms > 1 {
			flag = " !"
		}
		if p.Error != "" {
			flag += " (" + p.Error + ")"
		}
		b.printf("%-8s %-7s %-18s %-9.3f %-9.3f %-9.3f %-9.3f %-8.2f %-10.2f%s\n", p.Direction, t, p.Mode,
			p.P50Ms, p.P99Ms, p.MaxMs, p.AddedP99Ms, p.LossPct, p.LoadBps/1e6, flag)
	}
}
