package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

// rateRep is one transfer.
type rateRep struct {
	Rep int `json:"rep"`
	flowRate
	GoodputBps  float64 `json:"iperf3_goodput_bps,omitempty"` // iperf3's receiver-side average (payload), for reference
	Retransmits int     `json:"iperf3_retransmits"`
	WorstSecBps float64 `json:"worst_second_bps"` // lowest per-second rate after the first second
	Load1       float64 `json:"loadavg_1m"`       // the machine's 1-minute load average at the end (noise indicator)
	Error       string  `json:"error,omitempty"`
}

// ratePoint is one (direction, target, mode) with all its repetitions.
type ratePoint struct {
	Direction       string          `json:"direction"`
	TargetBps       uint64          `json:"target_bps"`
	Mode            string          `json:"mode"`
	Command         string          `json:"command,omitempty"`
	Reps            []rateRep       `json:"reps"`
	MedianWireBps   float64         `json:"median_wire_bps,omitempty"`
	MinWireBps      float64         `json:"min_wire_bps,omitempty"`
	MaxWireBps      float64         `json:"max_wire_bps,omitempty"`
	Ratio           float64         `json:"ratio,omitempty"` // median wire / target
	MinRatio        float64         `json:"min_ratio,omitempty"`
	MaxRatio        float64         `json:"max_ratio,omitempty"`
	FirstSecBps     float64         `json:"median_first_second_bps,omitempty"`
	FirstSecRatio   float64         `json:"first_second_ratio,omitempty"`
	Peak100msRatio  float64         `json:"peak_100ms_ratio,omitempty"`
	MedianGoodput   float64         `json:"median_iperf3_goodput_bps,omitempty"`
	MedianRetrans   float64         `json:"median_iperf3_retransmits"`
	WorstSecRatio   float64         `json:"worst_second_ratio,omitempty"` // lowest per-second rate of all reps / target
	MaxLoad1        float64         `json:"max_loadavg_1m,omitempty"`
	Error           string          `json:"error,omitempty"`
	KubeshaperState json.RawMessage `json:"kubeshaper_status,omitempty"` // `status --json` after the first rep's transfer
}

func (b *bench) rateSection() {
	cfg := b.cfg
	n := cfg.Reps * len(cfg.Rates) * len(cfg.Directions) * len(cfg.modes)
	logf("== rate: %d transfers of %s (%d reps × %d rates × %d directions × %d modes), interleaved",
		n, cfg.Duration, cfg.Reps, len(cfg.Rates), len(cfg.Directions), len(cfg.modes))
	var points []*ratePoint
	idx := map[string]*ratePoint{}
	for _, d := range cfg.Directions {
		for _, r := range cfg.Rates {
			for _, m := range cfg.modes {
				p := &ratePoint{Direction: d, TargetBps: r, Mode: m.Name}
				points = append(points, p)
				idx[fmt.Sprint(d, r, m.Name)] = p
			}
		}
	}
	b.report.Rate = points
	i := 0
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, r := range cfg.Rates {
			for _, d := range cfg.Directions {
				for _, m := range cfg.modes { // modes side by side: A,B,C,A,B,C…
					b.parkIfStopping()
					i++
					p := idx[fmt.Sprint(d, r, m.Name)]
					rr := b.rateOnce(p, m, rep)
					p.Reps = append(p.Reps, rr)
					if rr.Error != "" {
						logf("[%d/%d] rate %s %s %s rep %d: ERROR %s", i, n, d, shortRate(r), m.Name, rep, rr.Error)
					} else {
						logf("[%d/%d] rate %s %s %s rep %d: wire %s (%.3f), first s %.2fx, peak 100 ms %.2fx, goodput %s",
							i, n, d, shortRate(r), m.Name, rep, mbps(rr.WireBps), rr.WireBps/float64(r),
							rr.FirstSecBps/float64(r), rr.Peak100msBps/float64(r), mbps(rr.GoodputBps))
					}
				}
			}
		}
	}
	for _, p := range points {
		p.summarise()
	}
	b.printRate()
}

func mbps(bps float64) string { return fmt.Sprintf("%.2f Mbit/s", bps/1e6) }

// rateOnce runs one transfer at a point.
func (b *bench) rateOnce(p *ratePoint, m modeSpec, rep int) (rr rateRep) {
	rr.Rep = rep
	if err := b.ensureIperfServer(); err != nil {
		rr.Error = err.Error()
		return rr
	}
	cmd, err := b.applyBandwidth(m, p.Direction, p.TargetBps)
	if p.Command == "" {
		p.Command = cmd
	}
	defer b.clear(m)
	if err != nil {
		rr.Error = "apply: " + err.Error()
		return rr
	}
	h, dev := b.receiver(p.Direction)
	s, err := startSampler(h, dev, b.cfg.SampleEvery)
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	time.Sleep(150 * time.Millisecond)
	res, ierr := b.iperf(p.Direction, b.cfg.Duration)
	time.Sleep(300 * time.Millisecond) // the last queued bytes
	samples, serr := s.Stop()
	if rep == 1 && m.usesCLI() {
		p.KubeshaperState = b.status()
	}
	rr.GoodputBps, rr.Retransmits = res.goodput, res.retrans
	rr.Load1 = loadavg()
	fr, err := transferRate(samples, iperfErr(ierr), serr)
	rr.flowRate = fr
	if err != nil {
		rr.Error = err.Error()
	}
	for i, v := range fr.PerSecondBps {
		if i > 0 && (rr.WorstSecBps == 0 || v < rr.WorstSecBps) {
			rr.WorstSecBps = v
		}
	}
	return rr
}

// loadavg is the 1-minute load average (0 if unreadable).
func loadavg() float64 { return stats.LoadAvg() }

// receiver is the interface whose rx counters measure direction d: pod B's
// eth0 when pod A uploads (egress), pod A's eth0 when it downloads (ingress).
func (b *bench) receiver(d string) (*netlink.Handle, string) {
	if d == "egress" {
		return b.topo.hB, "eth0"
	}
	return b.topo.hA, "eth0"
}

type iperfResult struct {
	goodput float64
	retrans int
}

// iperfArgs is the client command in pod A: it uploads to pod B (egress)
// or, with -R, downloads from it (ingress).
func (b *bench) iperfArgs(dir string, d time.Duration) []string {
	args := []string{"netns", "exec", b.topo.A, "iperf3", "-c", ipB, "-p", fmt.Sprint(iperfPort),
		"-t", fmt.Sprint(int(math.Ceil(d.Seconds()))), "-J", "--connect-timeout", "3000"}
	if dir == "ingress" {
		args = append(args, "-R")
	}
	return args
}

// iperf runs one iperf3 TCP transfer from pod A and returns its own
// receiver-side goodput (for reference only: the rate comes from counters).
func (b *bench) iperf(dir string, d time.Duration) (iperfResult, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		cmd, out, err := b.startIperf(dir, d)
		if err != nil {
			return iperfResult{}, err
		}
		res, err := b.waitIperf(cmd, out, d)
		if err == nil {
			return res, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "busy") && !strings.Contains(err.Error(), "unable to connect") {
			return res, err
		}
		time.Sleep(time.Second)
		_ = b.ensureIperfServer()
	}
	return iperfResult{}, lastErr
}

func (b *bench) startIperf(dir string, d time.Duration) (*exec.Cmd, *bytes.Buffer, error) {
	cmd := exec.Command("ip", b.iperfArgs(dir, d)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := b.procs.start(cmd); err != nil {
		return nil, nil, err
	}
	return cmd, &out, nil
}

func (b *bench) waitIperf(cmd *exec.Cmd, out *bytes.Buffer, d time.Duration) (iperfResult, error) {
	timer := time.AfterFunc(d+40*time.Second, func() { killGroup(cmd) })
	err := cmd.Wait()
	timer.Stop()
	b.procs.done(cmd)
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	jerr := json.Unmarshal(out.Bytes(), &j)
	res := iperfResult{goodput: j.End.SumReceived.BitsPerSecond, retrans: j.End.SumSent.Retransmits}
	switch {
	case j.Error != "":
		return res, fmt.Errorf("%s", j.Error)
	case err != nil:
		return res, fmt.Errorf("%v: %s", err, firstLine(out.String()))
	case jerr != nil:
		return res, fmt.Errorf("bad JSON output: %v", jerr)
	}
	return res, nil
}

// summarise computes the point's median and spread over its good reps.
func (p *ratePoint) summarise() {
	var wire, first, peak, good, retr []float64
	var errs []string
	for _, r := range p.Reps {
		p.MaxLoad1 = math.Max(p.MaxLoad1, r.Load1)
		if r.Error != "" {
			errs = append(errs, r.Error)
			continue
		}
		retr = append(retr, float64(r.Retransmits))
		if w := r.WorstSecBps / float64(p.TargetBps); w > 0 && (p.WorstSecRatio == 0 || w < p.WorstSecRatio) {
			p.WorstSecRatio = w
		}
		wire = append(wire, r.WireBps)
		first = append(first, r.FirstSecBps)
		peak = append(peak, r.Peak100msBps)
		if r.GoodputBps > 0 {
			good = append(good, r.GoodputBps)
		}
	}
	if len(wire) == 0 {
		p.Error = "all reps failed"
		if len(errs) > 0 {
			p.Error = errs[0]
		}
		return
	}
	if len(errs) > 0 {
		p.Error = fmt.Sprintf("%d of %d reps failed: %s", len(errs), len(p.Reps), errs[0])
	}
	t := float64(p.TargetBps)
	p.MedianWireBps, p.MinWireBps, p.MaxWireBps = medMinMax(wire)
	p.Ratio, p.MinRatio, p.MaxRatio = p.MedianWireBps/t, p.MinWireBps/t, p.MaxWireBps/t
	p.FirstSecBps, _, _ = medMinMax(first)
	p.FirstSecRatio = p.FirstSecBps / t
	pk, _, _ := medMinMax(peak)
	p.Peak100msRatio = pk / t
	if len(good) > 0 {
		p.MedianGoodput, _, _ = medMinMax(good)
	}
	p.MedianRetrans, _, _ = medMinMax(retr)
}

func (b *bench) printRate() {
	cfg := b.cfg
	b.printf("\n== Rate: wire bit rate counted on the receiving pod's eth0 (rx_bytes, GSO-corrected to L2 wire bytes),\n")
	b.printf("   steady window = 1 s after the first data to the last full 50 ms interval of data; iperf3 TCP, 1 stream, %s per point,\n", cfg.Duration)
	b.printf("   median of %d rep(s) [min..max]; ratio = wire / target; first-1s, peak100ms (within the first second) and\n", cfg.Reps)
	b.printf("   worst-1s (lowest later second, all reps) as multiples of the target; retrans = iperf3's (median); load = max 1-min loadavg.\n")
	b.printf("   '!' marks |ratio-1| > 2 %% or first second > 2x.\n")
	b.printf("%-8s %-7s %-18s %-28s %-22s %-9s %-10s %-9s %-8s %-8s %-6s\n",
		"dir", "target", "mode", "wire Mbit/s [min..max]", "ratio [min..max]", "first-1s", "peak100ms", "worst-1s", "goodput", "retrans", "load")
	for _, p := range b.report.Rate {
		if p.MedianWireBps == 0 {
			b.printf("%-8s %-7s %-18s ERROR: %s\n", p.Direction, shortRate(p.TargetBps), p.Mode, p.Error)
			continue
		}
		flag := ""
		if math.Abs(p.Ratio-1) > 0.02 {
			flag += " !rate"
		}
		if p.FirstSecRatio > 2 {
			flag += " !first-s"
		}
		if p.Error != "" {
			flag += " (" + p.Error + ")"
		}
		b.printf("%-8s %-7s %-18s %-28s %-22s %-9s %-10s %-9s %-8.1f %-8.0f %-6.1f%s\n", p.Direction, shortRate(p.TargetBps), p.Mode,
			fmt.Sprintf("%.2f [%.2f..%.2f]", p.MedianWireBps/1e6, p.MinWireBps/1e6, p.MaxWireBps/1e6),
			fmt.Sprintf("%.3f [%.3f..%.3f]", p.Ratio, p.MinRatio, p.MaxRatio),
			fmt.Sprintf("%.2fx", p.FirstSecRatio), fmt.Sprintf("%.2fx", p.Peak100msRatio), fmt.Sprintf("%.2fx", p.WorstSecRatio),
			p.MedianGoodput/1e6, p.MedianRetrans, p.MaxLoad1, flag)
	}
}
