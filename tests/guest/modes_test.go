package guest

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/kfeature"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
	benchstats "github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

// TestModesSideBySide (issue 13) is the figure the host cannot make:
// mode=pace (EDT + fq) beside drop mode with and without cooperative
// socket pacing, in one run, interleaved, on a kernel with sch_fq (the
// qemu guests; the host has none). A benchmark, not a test of make test:
// it runs only with KUBESHAPER_BENCH set (make bench-pacing-guest), which
// tools/kernels passes into the guest like every KUBESHAPER_ variable.
//
// Per target rate, case (pod egress: a sends to b; same-node ingress: b
// sends to a, and b is a pod kubeshaper knows, so its sockets cooperate)
// and stream count, each mode runs for the same duration, repetitions
// interleaved mode by mode. Measured as make bench-pacing measures on the
// host: the wire rate the receiving pod's IP layer took in (1 s after the
// first data to the end), the first second, 100 ms bins after the first
// second (p5–p95), the sender netns's RetransSegs / OutSegs, kubeshaper's
// drops (policer, horizon) and fq's, and the p99 of UDP echo probes sent
// 10 ms apart through the limit from the second second on, less the p99
// of the same probes without load.
//
// Knobs (environment, passed into the guest by tools/kernels):
// KUBESHAPER_MODES_RATES (50M), KUBESHAPER_MODES_STREAMS (1,8),
// KUBESHAPER_MODES_MODES (drop,drop+pacing,pace; tbf too),
// KUBESHAPER_MODES_REPS (3), KUBESHAPER_MODES_DURATION (20s),
// KUBESHAPER_MODES_CASES (egress,ingress).
//
// It fails only on what no TCG stall can explain (checkModes).
func TestModesSideBySide(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: runs with KUBESHAPER_BENCH=1 (make bench-pacing-guest)")
	}
	cfg := modesConfigFromEnv(t)
	f := setup(t)
	ifcA, ifcB := f.Iface(t, f.A), f.Iface(t, f.B)
	// Pod b is a pod of this node, applied with no rule as the agent
	// applies every pod: its sockets are same-node senders for a's
	// ingress rule.
	f.apply(t, ifcB, rules.Policy{})
	flows := map[string]flow{}
	for _, fl := range f.flows() {
		flows[fl.dir.String()] = fl
	}

	type caseInfo struct {
		fl       flow
		key      datapath.Key
		fq       func() (queueStats, bool)
		echo     *net.UDPAddr
		idle     [2]float64 // probe RTT p50, p99 without load, ms
		capacity float64    // unpaced wire rate, bits/s
	}
	cases := map[string]*caseInfo{}
	for _, c := range cfg.cases {
		fl, ok := flows[c]
		if !ok {
			t.Fatalf("KUBESHAPER_MODES_CASES: no case %q (egress, ingress)", c)
		}
		ci := &caseInfo{fl: fl, key: datapath.KeyOf(ifcA.Index, fl.dir), echo: echoServer(t, fl.to)}
		f.apply(t, ifcA, rules.Policy{})
		// What this guest carries with no rule: where it is not well
		// above the target, CPU, not the mode, sets the rate.
		rx := rxCounter(t, fl.to)
		if got, err := measureRate(t, fl, rx, nil, 500*time.Millisecond, time.Second); err == nil {
			ci.capacity = got.bps
		}
		rtts, lost := probeRTTs(t, fl.from, ci.echo, 200, 10*time.Millisecond, time.Second)
		ci.idle = rttPercentiles(rtts)
		t.Logf("%s: unpaced %.0f Mbit/s; idle probe RTT p50 %.3f ms, p99 %.3f ms (%d lost of 200)", c, ci.capacity/1e6, ci.idle[0], ci.idle[1], lost)
		cases[c] = ci
	}

	var points []*modePoint
	for _, rate := range cfg.rates {
		for _, c := range cfg.cases {
			for _, n := range cfg.streams {
				for _, m := range cfg.modes {
					points = append(points, &modePoint{rate: rate, dir: c, streams: n, mode: m})
				}
			}
		}
	}
	pacingErr := error(nil)
	total := cfg.reps * len(points)
	t.Logf("%d transfers of %v: %d points × %d repetitions, interleaved by mode", total, cfg.duration, len(points), cfg.reps)
	i := 0
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, p := range points {
			i++
			ci := cases[p.dir]
			var pol rules.Policy
			pol[ci.fl.dir].Bandwidth = p.mode.bandwidth(p.rate)
			if err := f.apply(t, ifcA, pol); err == errNotYet {
				t.Fatalf("%s on pod %s: pkg/shaper says not supported yet", p.mode.name, p.dir)
			}
			if p.mode.name == "drop+pacing" {
				pacingErr = f.Sh.PacingError()
			}
			fq := func() (queueStats, bool) { return queueStats{}, false }
			if p.mode.rule == rules.ModePace {
				fq = fqQueue(t, ci.fl.fqNs, ci.fl.fqDev)
			}
			r := runTransfer(t, f, ci.fl, p.streams, cfg.duration, float64(p.rate), ci.key, fq, ci.echo)
			r.pingAdded = [2]float64{r.ping[0] - ci.idle[0], r.ping[1] - ci.idle[1]}
			p.reps = append(p.reps, r)
			t.Logf("[%d/%d] %s rep %d: %s", i, total, p.label(), rep, r)
		}
	}
	f.apply(t, ifcA, rules.Policy{})

	for _, p := range points {
		t.Logf("FIGURE %s", p.figure(cfg))
	}
	t.Logf("kernel %s; socket pacing: %v", kfeature.Release(), errOrOK(pacingErr))
	for _, p := range points {
		checkModes(t, p, cases[p.dir].capacity, pacingErr)
	}
}

// checkModes fails a point on what a correct build cannot show however
// slow the guest (a TCG vCPU stalls for tens of ms on a busy host, which
// only ever lowers a rate or adds a retransmission timeout):
//   - Above the limit: no mode sends more than +3 % plus what its bucket
//     may pass at once over the steady window (median of the
//     repetitions): a policer's bucket is 500 ms of the rate
//     (datapath.DefaultBurst: +2.6 % of a 19 s window, refilled while
//     TCP waits out a timeout), tbf's 20 ms, EDT none. The 3 % covers
//     where the window's edge samples fall (a stalled sampler: ~100 ms of
//     a ≥ 10 s window). Measured on the host (make bench-pacing, 20 s):
//     0.99–1.01. Deterministic: a wrong rate or a missing limit fails
//     every repetition.
//   - Below the limit, only where the guest carries ≥ 3× the target
//     unpaced (else the CPU, not the mode, sets the pace): −5 % for the
//     queueing modes (pace, tbf), whose departures follow each other at
//     the rate while the queue holds a backlog, late timers or not
//     (TestPaceWireRate's reasoning); 0.65 for the drop modes, whose rate
//     is TCP's own and in an emulated guest pays for its jittery RTT:
//     one paced stream at 50M measured 0.83–0.93 in 5 s TCG runs (its
//     congestion window, clamped to ~2 × rate × srtt by sock_ops, binds
//     whenever the RTT jumps past twice its average; TCP_INFO in the log),
//     0.99–1.00 on the host. 0.65 still catches a share counted twice
//     (≤ 0.5 of the target).
//   - Cooperative pacing in effect (kernel ≥ 5.15): drop+pacing
//     retransmits ≤ 1 % of what it sends (median), where the policer
//     alone retransmits 20–60 % at these rates (host, make bench-pacing;
//     8–23 % in a short TCG run) and paced runs retransmit 0. And, as the
//     proof that the test tests, the policer alone (pacing=off) must
//     retransmit ≥ 1 % where the guest can overrun the limit (capacity
//     ≥ 3× target): a veth's smallest congestion window exceeds it.
//
// Each is a median of ≥ 3 transfers of ≥ 10 s: a stall costs one
// transfer a few 100 ms, and two of three must be hit for a median to
// move. What is not certain (pace's and tbf's retransmissions, the 100 ms
// windows and first second in a guest whose timers are coarse, the
// probes' tails) is reported, not bounded.
func checkModes(t *testing.T, p *modePoint, capacity float64, pacingErr error) {
	t.Helper()
	wire, _, _ := p.wire()
	if math.IsNaN(wire) {
		t.Errorf("%s: no repetition measured", p.label())
		return
	}
	fast := capacity >= 3*float64(p.rate)
	low := 0.65
	if p.mode.rule == rules.ModePace || p.mode.rule == rules.ModeTBF {
		low = 0.95
	}
	high := 1.03 + p.burstShare()
	if wire > high {
		t.Errorf("%s: wire %.4f of the target (median): above %.3f (+3 %% and the bucket over the steady window)", p.label(), wire, high)
	}
	if fast && wire < low {
		t.Errorf("%s: wire %.4f of the target (median) where the guest carries %.0f Mbit/s unpaced: below %.2f", p.label(), wire, capacity/1e6, low)
	}
	retr := p.retransPct()
	switch {
	case p.mode.name == "drop+pacing" && pacingErr == nil && retr > 1:
		t.Errorf("%s: %.2f %% of segments retransmitted (median) with cooperative pacing in effect: want ≤ 1 %%", p.label(), retr)
	case p.mode.name == "drop" && fast && retr < 1:
		t.Errorf("%s: the policer alone retransmitted %.2f %% (median): the limit did not bind (want ≥ 1 %%: the test did not test)", p.label(), retr)
	}
}

// burstShare is the most the mode's bucket can pass above the rate over
// the median steady window, as a share of the target.
func (p *modePoint) burstShare() float64 {
	var burst uint64
	switch p.mode.rule {
	case rules.ModeDrop:
		burst = datapath.DefaultBurst(p.rate)
	case rules.ModeTBF:
		burst = datapath.DefaultTBFBurst(p.rate)
	}
	steady := benchstats.Median(p.values(func(r modeRep) float64 { return r.steady.Seconds() }))
	if burst == 0 || !(steady > 0) {
		return 0
	}
	return float64(burst) * 8 / float64(p.rate) / steady
}

func errOrOK(err error) string {
	if err == nil {
		return "in effect"
	}
	return err.Error()
}

// modeSpec is one way of enforcing the limit.
type modeSpec struct {
	name     string
	rule     rules.BandwidthMode
	noPacing bool
}

var knownModes = map[string]modeSpec{
	"drop":        {"drop", rules.ModeDrop, true}, // the policer alone (pacing=off)
	"drop+pacing": {"drop+pacing", rules.ModeDrop, false},
	"pace":        {"pace", rules.ModePace, false},
	"tbf":         {"tbf", rules.ModeTBF, false},
}

func (m modeSpec) bandwidth(rate uint64) *rules.Bandwidth {
	return &rules.Bandwidth{RateBitsPerSec: rate, Mode: m.rule, NoSocketPacing: m.noPacing}
}

type modesConfig struct {
	rates    []uint64
	cases    []string
	streams  []int
	modes    []modeSpec
	reps     int
	duration time.Duration
}

func modesConfigFromEnv(t *testing.T) modesConfig {
	t.Helper()
	env := func(k, def string) []string {
		v := os.Getenv("KUBESHAPER_MODES_" + k)
		if v == "" {
			v = def
		}
		return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	}
	var c modesConfig
	for _, s := range env("RATES", "50M") {
		r, err := parseRate(s)
		if err != nil {
			t.Fatalf("KUBESHAPER_MODES_RATES: %v", err)
		}
		c.rates = append(c.rates, r)
	}
	c.cases = env("CASES", "egress,ingress")
	for _, s := range env("STREAMS", "1,8") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KUBESHAPER_MODES_STREAMS: %q is not a stream count", s)
		}
		c.streams = append(c.streams, n)
	}
	for _, s := range env("MODES", "drop,drop+pacing,pace") {
		m, ok := knownModes[s]
		if !ok {
			t.Fatalf("KUBESHAPER_MODES_MODES: no mode %q (drop, drop+pacing, pace, tbf)", s)
		}
		c.modes = append(c.modes, m)
	}
	var err error
	if c.reps, err = strconv.Atoi(env("REPS", "3")[0]); err != nil || c.reps < 1 {
		t.Fatalf("KUBESHAPER_MODES_REPS: want a count ≥ 1")
	}
	if c.duration, err = time.ParseDuration(env("DURATION", "20s")[0]); err != nil || c.duration < 4*time.Second {
		t.Fatalf("KUBESHAPER_MODES_DURATION: want a duration ≥ 4s (a first second, probes from the second on, a steady window)")
	}
	return c
}

// parseRate reads 50M, 240M, 1G, 500k (bits/s, decimal).
func parseRate(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1e9, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "k"):
		mult, s = 1e3, strings.TrimSuffix(s, "k")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%q is not a rate (50M, 1G)", s)
	}
	return v * mult, nil
}

func rateName(r uint64) string {
	if r%1e9 == 0 {
		return fmt.Sprintf("%dG", r/1e9)
	}
	if r%1e6 == 0 {
		return fmt.Sprintf("%dM", r/1e6)
	}
	return fmt.Sprintf("%dk", r/1e3)
}

// modePoint is one row: a rate, case, stream count and mode, and its
// repetitions.
type modePoint struct {
	rate    uint64
	dir     string
	streams int
	mode    modeSpec
	reps    []modeRep
}

func (p *modePoint) label() string {
	return fmt.Sprintf("%s %s ×%d %s", p.dir, rateName(p.rate), p.streams, p.mode.name)
}

// modeRep is one transfer.
type modeRep struct {
	transferRates
	err              error
	outSegs, retrans uint64
	shaperDrops      uint64     // kubeshaper's (bandwidth, horizon), by its counters
	fqDrops          uint64     // the fq qdisc's own (flow limit, queue limit), pace mode
	ping, pingAdded  [2]float64 // probe RTT p50, p99 under load, ms; less the idle ones
	pingLost, pings  int
	tcpInfo          string // the first stream's, at the end
}

func (r modeRep) retransPct() float64 {
	if r.outSegs == 0 {
		return math.NaN()
	}
	return 100 * float64(r.retrans) / float64(r.outSegs)
}

func (r modeRep) String() string {
	if r.err != nil {
		return "ERROR " + r.err.Error()
	}
	return fmt.Sprintf("wire %.4f, first s %.2f, 100 ms p5–p95 %.2f–%.2f (%d bins, longest sampling gap %v), retransmitted %.3f %% (%d of %d), drops kubeshaper %d fq %d, probe RTT p50 %.3f ms (%+.3f), p99 %.3f ms (%+.3f), %d of %d lost; first stream: %s",
		r.wire, r.firstSecond, r.p5, r.p95, r.bins, r.maxGap.Round(time.Millisecond), r.retransPct(), r.retrans, r.outSegs,
		r.shaperDrops, r.fqDrops, r.ping[0], r.pingAdded[0], r.ping[1], r.pingAdded[1], r.pingLost, r.pings, r.tcpInfo)
}

// values collects one figure of every repetition that measured.
func (p *modePoint) values(get func(modeRep) float64) []float64 {
	var v []float64
	for _, r := range p.reps {
		if r.err == nil && !math.IsNaN(get(r)) {
			v = append(v, get(r))
		}
	}
	return v
}

func (p *modePoint) wire() (med, lo, hi float64) {
	v := p.values(func(r modeRep) float64 { return r.wire })
	lo, hi = benchstats.MinMax(v)
	return benchstats.Median(v), lo, hi
}

func (p *modePoint) retransPct() float64 {
	return benchstats.Median(p.values(func(r modeRep) float64 { return r.retransPct() }))
}

// figure is the point's FIGURE line (tools/kernels collects them into its
// summary; tools/readmefigs renders them from docs/bench/pacing-guest.md).
func (p *modePoint) figure(cfg modesConfig) string {
	wire, lo, hi := p.wire()
	med := func(get func(modeRep) float64) float64 { return benchstats.Median(p.values(get)) }
	var drops, errs []string
	for _, r := range p.reps {
		if r.err != nil {
			errs = append(errs, r.err.Error())
			continue
		}
		drops = append(drops, fmt.Sprintf("%d+%d", r.shaperDrops, r.fqDrops))
	}
	s := fmt.Sprintf("modes %s: wire %.4f [%.4f–%.4f], first second %.2f, 100 ms p5–p95 %.2f–%.2f, retransmitted %.3f %% (%.0f segments), drops %s, probe RTT added p50 %.3f ms p99 %.3f ms, %d × %v, longest sampling gap %v",
		p.label(), wire, lo, hi,
		med(func(r modeRep) float64 { return r.firstSecond }),
		med(func(r modeRep) float64 { return r.p5 }), med(func(r modeRep) float64 { return r.p95 }),
		p.retransPct(), med(func(r modeRep) float64 { return float64(r.retrans) }),
		strings.Join(drops, ", "), med(func(r modeRep) float64 { return r.pingAdded[0] }), med(func(r modeRep) float64 { return r.pingAdded[1] }),
		len(p.reps)-len(errs), cfg.duration,
		time.Duration(med(func(r modeRep) float64 { return float64(r.maxGap) })).Round(time.Millisecond))
	if len(errs) > 0 {
		s += " (errors: " + strings.Join(errs, "; ") + ")"
	}
	return s
}

// runTransfer runs streams bulk TCP connections along fl for d and
// measures them (modeRep). The connections are reset at the end (linger
// 0): a paced flow's send buffer can hold seconds of data at the limit,
// which would otherwise drain into the next transfer.
func runTransfer(t *testing.T, f *fixture, fl flow, streams int, d time.Duration, target float64,
	key datapath.Key, fq func() (queueStats, bool), echo *net.UDPAddr) modeRep {
	t.Helper()
	var r modeRep
	snmp0, err := netlab.NetCounters(fl.from, "snmp")
	if err != nil {
		t.Fatal(err)
	}
	k0, _, _ := f.DP.Counters(key)
	q0, _ := fq()

	// Sample the receiver's delivered wire bytes every 20 ms.
	var (
		mu      sync.Mutex
		samples []wireSample
		sErr    error
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	begin := time.Now()
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			b, err := netlab.DeliveredWireBytes(fl.to)
			at := time.Since(begin)
			mu.Lock()
			if err != nil && sErr == nil {
				sErr = err
			}
			samples = append(samples, wireSample{at, b})
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	var bulks []*bulk
	for range streams {
		bulks = append(bulks, startBulk(t, fl.from, fl.to))
	}
	// Probes from 1.5 s to the last 1.5 s, 10 ms apart (probeRTTs then
	// waits maxRTT + 1 s for late answers).
	time.Sleep(1500 * time.Millisecond)
	n := int((d - 3*time.Second) / (10 * time.Millisecond))
	rtts, lost := probeRTTs(t, fl.from, echo, n, 10*time.Millisecond, 200*time.Millisecond)
	r.pings, r.pingLost, r.ping = n, lost, rttPercentiles(rtts)
	time.Sleep(time.Until(start.Add(d)))
	end := time.Since(begin)
	r.tcpInfo = bulks[0].info()
	for _, b := range bulks {
		b.abort()
	}
	close(stop)
	<-sampled
	for _, b := range bulks {
		if err := b.wait(10 * time.Second); err != nil {
			t.Logf("a stream did not end cleanly: %v", err)
		}
	}
	snmp1, err := netlab.NetCounters(fl.from, "snmp")
	if err != nil {
		t.Fatal(err)
	}
	k1, _, _ := f.DP.Counters(key)
	q1, _ := fq()
	r.outSegs = snmp1["Tcp:OutSegs"] - snmp0["Tcp:OutSegs"]
	r.retrans = snmp1["Tcp:RetransSegs"] - snmp0["Tcp:RetransSegs"]
	for i := range k1.DropPackets {
		r.shaperDrops += k1.DropPackets[i] - k0.DropPackets[i]
	}
	r.fqDrops = uint64(q1.drops - q0.drops)
	mu.Lock()
	defer mu.Unlock()
	if sErr != nil {
		r.err = sErr
		return r
	}
	r.transferRates, r.err = rates(samples, end, target)
	// Let the queues empty before the next transfer.
	time.Sleep(300 * time.Millisecond)
	return r
}
