package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/bounds"
)

const (
	actUnspec = 0xffffffff // TC_ACT_UNSPEC (-1): pass on to later filters
	actShot   = 2          // TC_ACT_SHOT
)

// openTest loads the programs with maps pinned in a private directory, so
// tests neither see nor disturb a running agent's state.
func openTest(t testing.TB) *Datapath {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
	if !isBPFFS(DefaultBPFFS) {
		t.Fatalf("no bpffs at %s: mount one (mount -t bpf bpf %s)", DefaultBPFFS, DefaultBPFFS)
	}
	b := make([]byte, 4)
	rand.Read(b)
	dir := DefaultBPFFS + "/kstest-" + hex.EncodeToString(b)
	dp, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		removePins(dir)
		os.Remove(dir)
	})
	return dp
}

func run(t testing.TB, dp *Datapath, dir rules.Direction, pkt []byte, ctx *skbCtx) uint32 {
	t.Helper()
	if ctx == nil {
		ctx = &skbCtx{}
	}
	out := *ctx
	ret, err := dp.Program(dir).Run(&ebpf.RunOptions{Data: pkt, Context: *ctx, ContextOut: &out})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	*ctx = out
	return ret
}

func set(t testing.TB, dp *Datapath, dir rules.Direction, p rules.DirectionPolicy) Config {
	t.Helper()
	cfg, err := ConfigFor(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Set(KeyOf(loIfindex, dir), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func counters(t testing.TB, dp *Datapath, dir rules.Direction) Counters {
	t.Helper()
	c, ok, err := dp.Counters(KeyOf(loIfindex, dir))
	if err != nil || !ok {
		t.Fatalf("counters: ok=%v err=%v", ok, err)
	}
	return c
}

// setState puts the bucket in a known state: this is how tests control
// time, since bpf_ktime_get_ns cannot be faked. age is how long ago the
// bucket last refilled; frozen puts that in the future, where the program
// clamps the elapsed time to zero, so no refill happens however slowly the
// test reaches prog.Run (an emulated guest can take milliseconds).

func setState(t testing.TB, dp *Datapath, dir rules.Direction, tokens int64, age time.Duration, tNext uint64) {
	t.Helper()
	key := KeyOf(loIfindex, dir)
	var r rule
	if err := dp.ruleAt(key, &r); err != nil {
		t.Fatal(err)
	}
	r.TokensQ32, r.LastNs, r.T_next = tokens<<32, bucketNow()-uint64(age), tNext
	if err := dp.setRuleAt(key, r); err != nil {
		t.Fatal(err)
	}
}

// frozen as a setState age: no refill until the next packet.
const frozen = -time.Hour

func TestNoConfigPassesUncounted(t *testing.T) {
	dp := openTest(t)
	if ret := run(t, dp, rules.Egress, udpPacket(64), nil); ret != actUnspec {
		t.Fatalf("ret = %d, want TC_ACT_UNSPEC", ret)
	}
	if _, ok, _ := dp.Counters(KeyOf(loIfindex, rules.Egress)); ok {
		t.Fatal("counters created for an interface without config")
	}
}

func TestMonitorCountsBothDirectionsSeparately(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{})
	set(t, dp, rules.Ingress, rules.DirectionPolicy{})
	for range 3 {
		if ret := run(t, dp, rules.Egress, udpPacket(100), nil); ret != actUnspec {
			t.Fatalf("ret = %d", ret)
		}
	}
	run(t, dp, rules.Ingress, udpPacket(200), nil)
	eg, in := counters(t, dp, rules.Egress), counters(t, dp, rules.Ingress)
	if eg.Packets != 3 || eg.Bytes != 300 || in.Packets != 1 || in.Bytes != 200 {
		t.Fatalf("egress %d/%d ingress %d/%d, want 3/300 and 1/200", eg.Packets, eg.Bytes, in.Packets, in.Bytes)
	}
	if p, _ := eg.Dropped(); p != 0 {
		t.Fatalf("drops without a rule: %d", p)
	}
}

func TestGSOCountsWireBytes(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{})
	// 2 segments of 1448 bytes (BPF_PROG_TEST_RUN takes at most a page):
	// one skb of 66+2896 bytes, on the wire 2 packets of 66+1448.
	pkt := tcpPacket(2896)
	run(t, dp, rules.Egress, pkt, &skbCtx{GSOSegs: 2, GSOSize: 1448})
	c := counters(t, dp, rules.Egress)
	if c.Packets != 2 || c.Bytes != 2*(66+1448) {
		t.Fatalf("packets %d bytes %d, want 2 and %d", c.Packets, c.Bytes, 2*(66+1448))
	}
}

func TestLossThresholdExtremes(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100}})
	set(t, dp, rules.Ingress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossExponential, Threshold: 1000}})
	for range 50 {
		if ret := run(t, dp, rules.Egress, udpPacket(64), nil); ret != actShot {
			t.Fatalf("100%% loss passed a packet (ret %d)", ret)
		}
	}
	c := counters(t, dp, rules.Egress)
	if c.DropPackets[ReasonLoss] != 50 || c.DropBytes[ReasonLoss] != 50*64 || c.Packets != 50 {
		t.Fatalf("loss drops %d/%d bytes, seen %d; want 50/3200, 50", c.DropPackets[ReasonLoss], c.DropBytes[ReasonLoss], c.Packets)
	}
	// e^-10 = 4.5e-5: 50 packets almost surely all pass (P(any drop) 0.2 %).
	drops := 0
	for range 50 {
		if run(t, dp, rules.Ingress, udpPacket(64), nil) == actShot {
			drops++
		}
	}
	if drops > 1 {
		t.Fatalf("exponential t=1000 dropped %d of 50", drops)
	}
}

// TestLossRateWithinBounds runs 100,000 packets per probability in the
// kernel (BPF_PROG_TEST_RUN repeat) and checks the exact binomial interval
// sized for the whole CI run (tests/bounds).
func TestLossRateWithinBounds(t *testing.T) {
	dp := openTest(t)
	cases := []rules.Loss{
		{Kind: rules.LossUniform, Percent: 0.1},
		{Kind: rules.LossUniform, Percent: 10},
		{Kind: rules.LossUniform, Percent: 50},
		{Kind: rules.LossExponential, Threshold: 0},
		{Kind: rules.LossExponential, Threshold: 100},
		{Kind: rules.LossExponential, Threshold: 300},
	}
	const n = 100000
	for _, l := range cases {
		key := KeyOf(loIfindex, rules.Egress)
		if err := dp.Delete(key); err != nil {
			t.Fatal(err)
		}
		set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &l})
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: udpPacket(64), Context: skbCtx{}, Repeat: n}); err != nil {
			t.Fatal(err)
		}
		c := counters(t, dp, rules.Egress)
		p := l.Probability()
		got := float64(c.DropPackets[ReasonLoss])
		// cilium/ebpf re-issues a run the kernel interrupted (a signal to
		// the thread), so a slow guest may count a few more than n packets:
		// the bound is for the packets the program saw.
		lo, hi := bounds.Binomial(int64(c.Packets), p)
		if c.Packets < n || got < float64(lo) || got > float64(hi) {
			t.Errorf("%s: %v drops of %d, want within [%d, %d] (p=%g; tests/bounds)", l, got, c.Packets, lo, hi, p)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	dp := openTest(t)
	// 8 Mbit/s = 1e6 bytes/s, burst 100 kB, debt = min(GSODebt, burst).
	cfg := set(t, dp, rules.Egress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, BurstBytes: 100000, Mode: rules.ModeDrop}})
	if r, err := cfg.value(); err != nil || r.Debt != GSODebt || r.Burst != 100000 || r.Rate != 1e6 {
		t.Fatalf("config %+v, value %+v (%v)", cfg, r, err)
	}
	big := udpPacket(1500)

	// Empty bucket, no time elapsed: a packet may still take the bucket
	// into debt, but not beyond it.
	setState(t, dp, rules.Egress, 0, frozen, 0)
	if ret := run(t, dp, rules.Egress, big, nil); ret != actUnspec {
		t.Fatalf("empty bucket with debt room dropped (ret %d)", ret)
	}
	setState(t, dp, rules.Egress, -int64(GSODebt)+1000, frozen, 0)
	if ret := run(t, dp, rules.Egress, big, nil); ret != actShot {
		t.Fatalf("packet beyond the debt passed (ret %d)", ret)
	}
	// A sparse packet (a ping, an ACK) still passes down to -burst...
	if ret := run(t, dp, rules.Egress, udpPacket(98), nil); ret != actUnspec {
		t.Fatalf("sparse packet dropped within the burst's debt (ret %d)", ret)
	}
	// ...but not below.
	setState(t, dp, rules.Egress, -100000+50, frozen, 0)
	if ret := run(t, dp, rules.Egress, udpPacket(98), nil); ret != actShot {
		t.Fatalf("sparse packet passed beyond -burst (ret %d)", ret)
	}
	// Refill: 20 ms at 1e6 B/s = 20 kB brings -19 kB back above zero.
	setState(t, dp, rules.Egress, -19000, 20*time.Millisecond, 0)
	if ret := run(t, dp, rules.Egress, big, nil); ret != actUnspec {
		t.Fatalf("refilled bucket dropped (ret %d)", ret)
	}
	// Refill never exceeds the burst, however long the bucket idled.
	setState(t, dp, rules.Egress, 0, time.Hour, 0)
	passed := 0
	start := monotonicNow()
	for run(t, dp, rules.Egress, big, nil) == actUnspec {
		passed++
		if passed > 1000 {
			t.Fatal("bucket never ran dry")
		}
	}
	// burst 100000 + debt 68506: 168506/1500 → 112 packets, plus what
	// refills during the loop (1e6 B/s: a packet per 1.5 ms it takes),
	// plus one tick of the bucket's coarse clock (≤ 10 ms: 7 packets).
	refill := int(float64(monotonicNow()-start)/1e9*1e6/1500) + 7
	if passed < 112 || passed > 113+refill {
		t.Fatalf("%d packets passed a full bucket, want 112..%d", passed, 113+refill)
	}
	c := counters(t, dp, rules.Egress)
	if c.DropPackets[ReasonBandwidth] != 3 {
		t.Fatalf("bandwidth drops %d, want 3", c.DropPackets[ReasonBandwidth])
	}
}

func TestTokenBucketChargesGSOWireBytes(t *testing.T) {
	dp := openTest(t)
	// 80 kbit/s: refill during the run is well under a byte per 100 µs.
	set(t, dp, rules.Egress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e4, BurstBytes: 200000, Mode: rules.ModeDrop}})
	setState(t, dp, rules.Egress, 100000, frozen, 0)
	key := KeyOf(loIfindex, rules.Egress)
	var before, st rule
	if err := dp.ruleAt(key, &before); err != nil {
		t.Fatal(err)
	}
	run(t, dp, rules.Egress, tcpPacket(2896), &skbCtx{GSOSegs: 2, GSOSize: 1448})
	if err := dp.ruleAt(key, &st); err != nil {
		t.Fatal(err)
	}
	// Charged 2 × 1514 = 3028 wire bytes, exactly: the state was frozen,
	// so nothing refilled in between.
	if charged := before.Tokens() - st.Tokens(); charged != 3028 {
		t.Fatalf("GSO skb charged %.1f bytes, want 3028", charged)
	}
}

func TestPaceStampsDepartureTimes(t *testing.T) {
	dp := openTest(t)
	// 800 kbit/s: a 1000-byte packet occupies the link for 10 ms, longer
	// than a loaded machine takes between two runs.
	set(t, dp, rules.Ingress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e5, Mode: rules.ModePace}})
	before := monotonicNow()
	ctx := &skbCtx{}
	run(t, dp, rules.Ingress, udpPacket(1000), ctx)
	first := ctx.Tstamp
	after := monotonicNow()
	if first < before || first > after {
		t.Fatalf("first departure %d outside [%d, %d]", first, before, after)
	}
	// Back to back, the next packet leaves exactly 10 ms later. The queue
	// is put 500 ms ahead of now (within the horizon) so that how long the
	// test takes between runs — an emulated guest can stall longer than
	// 10 ms — cannot move the departures.
	ahead := monotonicNow() + uint64(500*time.Millisecond)
	setState(t, dp, rules.Ingress, 0, 0, ahead)
	var departures [3]uint64
	for i := range departures {
		ctx = &skbCtx{}
		run(t, dp, rules.Ingress, udpPacket(1000), ctx)
		departures[i] = ctx.Tstamp
	}
	if departures[0] != ahead || departures[1]-departures[0] != uint64(10*time.Millisecond) || departures[2]-departures[1] != uint64(10*time.Millisecond) {
		t.Fatalf("departures %v, want %d then every 10ms", departures, ahead)
	}
	// A departure beyond the horizon is dropped and counted as such.
	setState(t, dp, rules.Ingress, 0, 0, monotonicNow()+uint64(DefaultHorizon)+uint64(time.Second))
	if ret := run(t, dp, rules.Ingress, udpPacket(1000), &skbCtx{}); ret != actShot {
		t.Fatalf("packet beyond the horizon passed (ret %d)", ret)
	}
	if c := counters(t, dp, rules.Ingress); c.DropPackets[ReasonHorizon] != 1 {
		t.Fatalf("horizon drops %d, want 1", c.DropPackets[ReasonHorizon])
	}
	// The stack's own later timestamp is never moved earlier.
	setState(t, dp, rules.Ingress, 0, 0, 0)
	late := monotonicNow() + uint64(time.Second)
	ctx = &skbCtx{Tstamp: late}
	run(t, dp, rules.Ingress, udpPacket(1000), ctx)
	if ctx.Tstamp != late {
		t.Fatalf("tstamp %d, want the stack's %d kept", ctx.Tstamp, late)
	}
}

func TestDelayWithJitter(t *testing.T) {
	dp := openTest(t)
	const delay, jitter = 50 * time.Millisecond, 10 * time.Millisecond
	set(t, dp, rules.Ingress, rules.DirectionPolicy{Delay: &rules.Delay{Delay: delay, Jitter: jitter}})
	var sum, lo, hi time.Duration = 0, time.Hour, 0
	const n = 2000
	for range n {
		ctx := &skbCtx{}
		before := monotonicNow()
		run(t, dp, rules.Ingress, udpPacket(100), ctx)
		after := monotonicNow()
		// The program read the clock somewhere in [before, after]: the
		// delay it added lies in [tstamp-after, tstamp-before].
		dlo, dhi := time.Duration(ctx.Tstamp-after), time.Duration(ctx.Tstamp-before)
		if dlo > delay+jitter || dhi < delay-jitter {
			t.Fatalf("delay in [%v, %v], outside [%v, %v]", dlo, dhi, delay-jitter, delay+jitter)
		}
		d := (dlo + dhi) / 2
		sum += d
		lo, hi = min(lo, d), max(hi, d)
	}
	mean := sum / n
	// σ of the mean of n uniform draws = 20ms/sqrt(12 n) = 0.13 ms.
	if mean < delay-time.Millisecond || mean > delay+time.Millisecond {
		t.Fatalf("mean delay %v, want %v ± 1ms", mean, delay)
	}
	if hi-lo < 18*time.Millisecond {
		t.Fatalf("jitter spread %v, want ≈ 20ms", hi-lo)
	}
}

func TestSetKeepsCountersAndStateDeleteRemovesAll(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{})
	run(t, dp, rules.Egress, udpPacket(64), nil)
	set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 1}})
	if c := counters(t, dp, rules.Egress); c.Packets != 1 {
		t.Fatalf("rule change reset counters: %d packets", c.Packets)
	}
	if err := dp.Delete(KeyOf(loIfindex, rules.Egress)); err != nil {
		t.Fatal(err)
	}
	keys, err := dp.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Fatalf("entries left after Delete: %v", keys)
	}
	if err := dp.Delete(KeyOf(loIfindex, rules.Egress)); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestPinnedStateSurvivesReopen(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 5}})
	run(t, dp, rules.Egress, udpPacket(64), nil)
	again, err := Open(dp.PinDir())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	cfg, ok, err := again.Lookup(KeyOf(loIfindex, rules.Egress))
	if err != nil || !ok || cfg.LossProbability() < 0.049 || cfg.LossProbability() > 0.051 {
		t.Fatalf("reopened config %+v ok=%v err=%v", cfg, ok, err)
	}
	c, _, _ := again.Counters(KeyOf(loIfindex, rules.Egress))
	if c.Packets != 1 {
		t.Fatalf("reopened counters %d packets, want 1", c.Packets)
	}
}

// TestRefillCarriesRemainder: many small packets, each refilling a
// fraction of a byte. The bucket must account every byte-nanosecond;
// truncating each refill would lose up to a byte per packet.
func TestRefillCarriesRemainder(t *testing.T) {
	dp := openTest(t)
	// 7,777,777 bit/s = 972,222.125 B/s: refills are never whole bytes.
	set(t, dp, rules.Egress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 7777777, BurstBytes: 1 << 29, Mode: rules.ModeDrop}})
	setState(t, dp, rules.Egress, 0, 0, 0)
	key := KeyOf(loIfindex, rules.Egress)
	var start rule
	if err := dp.ruleAt(key, &start); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for range n {
		run(t, dp, rules.Egress, udpPacket(64), nil)
	}
	var end rule
	if err := dp.ruleAt(key, &end); err != nil {
		t.Fatal(err)
	}
	if d := counters(t, dp, rules.Egress).DropPackets[ReasonBandwidth]; d != 0 {
		t.Fatalf("%d drops; the test wants every packet to pass", d)
	}
	credit := float64(end.LastNs-start.LastNs) * float64(start.Rate) / 1e9
	want := start.Tokens() + credit - n*64
	if diff := end.Tokens() - want; diff < -1 || diff > 1 {
		t.Fatalf("tokens %.2f, want %.2f (off by %.2f bytes over %d refills)", end.Tokens(), want, diff, n)
	}
}

// TestPodSideProgram: the pod-side instance works on the host veth's key
// whatever the skb's ifindex, and exactly one of the two programs handles a
// direction marked at-pod.
func TestPodSideProgram(t *testing.T) {
	dp := openTest(t)
	cfg, err := ConfigFor(rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, Mode: rules.ModePace}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetAtPod()
	const host = 4242 // the host veth's ifindex; the skb runs on lo
	if err := dp.Set(KeyOf(host, rules.Egress), cfg); err != nil {
		t.Fatal(err)
	}
	prog, err := dp.PodSideProgram(host, rules.Egress)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	ctx := skbCtx{}
	out := ctx
	if _, err := prog.Run(&ebpf.RunOptions{Data: udpPacket(1000), Context: ctx, ContextOut: &out}); err != nil {
		t.Fatal(err)
	}
	if out.Tstamp == 0 {
		t.Fatal("pod-side program did not stamp a departure time")
	}
	c, ok, err := dp.Counters(KeyOf(host, rules.Egress))
	if err != nil || !ok || c.Packets != 1 {
		t.Fatalf("host veth's counters after the pod-side run: %+v ok=%v err=%v", c, ok, err)
	}
	// The host-side program, had it the same key, must stay out.
	if err := dp.Set(KeyOf(loIfindex, rules.Egress), cfg); err != nil {
		t.Fatal(err)
	}
	hctx := &skbCtx{}
	if ret := run(t, dp, rules.Egress, udpPacket(1000), hctx); ret != actUnspec || hctx.Tstamp != 0 {
		t.Fatalf("host-side program acted on an at-pod rule: ret %d tstamp %d", ret, hctx.Tstamp)
	}
	if c, _, _ := dp.Counters(KeyOf(loIfindex, rules.Egress)); c.Packets != 0 {
		t.Fatalf("host-side program counted an at-pod rule's packet")
	}
}

// TestPodSideIngressProgram: the pod-side ingress instance enforces a
// pod-ingress rule marked at-pod (100 % loss: deterministic) on the host veth's key, while
// the host-side ingress program stays out of it; the egress direction of
// the same veth is untouched (the at-pod flag is per direction).
func TestPodSideIngressProgram(t *testing.T) {
	dp := openTest(t)
	cfg, err := ConfigFor(rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetAtPod()
	const host = 4243
	if err := dp.Set(KeyOf(host, rules.Ingress), cfg); err != nil {
		t.Fatal(err)
	}
	prog, err := dp.PodSideProgram(host, rules.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	shot := 0
	for range 200 {
		ret, err := prog.Run(&ebpf.RunOptions{Data: udpPacket(1400), Context: skbCtx{}})
		if err != nil {
			t.Fatal(err)
		}
		if ret == actShot {
			shot++
		}
	}
	if shot != 200 {
		t.Fatalf("pod-side ingress instance dropped %d of 200 packets under 100 %% loss", shot)
	}
	c, ok, err := dp.Counters(KeyOf(host, rules.Ingress))
	if err != nil || !ok || c.Packets != 200 {
		t.Fatalf("host veth's ingress counters after the pod-side run: %+v ok=%v err=%v", c, ok, err)
	}
	if c, _, _ := dp.Counters(KeyOf(host, rules.Egress)); c.Packets != 0 {
		t.Fatalf("pod-side ingress instance counted on the egress key: %+v", c)
	}
	// The host-side ingress program, had it the same key, must stay out.
	if err := dp.Set(KeyOf(loIfindex, rules.Ingress), cfg); err != nil {
		t.Fatal(err)
	}
	if ret := run(t, dp, rules.Ingress, udpPacket(1000), &skbCtx{}); ret != actUnspec {
		t.Fatalf("host-side program acted on an at-pod ingress rule: ret %d", ret)
	}
	if c, _, _ := dp.Counters(KeyOf(loIfindex, rules.Ingress)); c.Packets != 0 {
		t.Fatalf("host-side program counted an at-pod ingress rule's packet")
	}
}

// TestBandwidthDropsOfTCPDataCounted: the retransmissions the policer
// causes (issue 13) are its bandwidth drops of TCP segments with data —
// not of pure ACKs, not of UDP, not of loss drops.
func TestBandwidthDropsOfTCPDataCounted(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, BurstBytes: 100000, Mode: rules.ModeDrop}})
	dry := func() { setState(t, dp, rules.Egress, -100000+10, frozen, 0) } // below even a sparse packet's debt
	for _, c := range []struct {
		pkt  []byte
		ctx  *skbCtx
		want uint64
	}{
		{tcpPacket(1448), nil, 1},
		{tcpPacket(2896), &skbCtx{GSOSegs: 2, GSOSize: 1448}, 2},
		{tcpPacket(0), nil, 0}, // a pure ACK
		{udpPacket(1400), nil, 0},
	} {
		dry()
		before := counters(t, dp, rules.Egress)
		if ret := run(t, dp, rules.Egress, c.pkt, c.ctx); ret != actShot {
			t.Fatalf("%d-byte packet passed a dry bucket (ret %d)", len(c.pkt), ret)
		}
		after := counters(t, dp, rules.Egress)
		if got := after.TcpDataBwDrops - before.TcpDataBwDrops; got != c.want {
			t.Errorf("%d-byte packet: %d TCP data drops counted, want %d", len(c.pkt), got, c.want)
		}
	}
}

// ruleAt reads key's raw map value (state included) under its lock.
func (d *Datapath) ruleAt(key Key, r *rule) error {
	i, ok, err := d.indexOf(key)
	if err != nil {
		return err
	}
	if !ok {
		return ebpf.ErrKeyNotExist
	}
	return d.objs.KsRules.LookupWithFlags(i, r, ebpf.LookupLock)
}

// setRuleAt writes key's raw map value under its lock.
func (d *Datapath) setRuleAt(key Key, r rule) error {
	i, ok, err := d.indexOf(key)
	if err != nil {
		return err
	}
	if !ok {
		return ebpf.ErrKeyNotExist
	}
	return d.objs.KsRules.Update(i, r, ebpf.UpdateLock)
}
