package datapath

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// The token bucket reads a coarse clock (bpf/shaper.c, bucket_now): it
// advances once a tick. Its resolution must not change the long-run
// rate: over a run, the bucket's credit is rate × (c_end − c_start) with
// c within a tick of true time, so it differs from rate × the measured
// wall time by at most two ticks' worth of bytes, however long the run.
// Here 1.5 s of 64 B packets through a 1 MB/s bucket, as fast as
// BPF_PROG_TEST_RUN goes (far above the rate: the bucket is always in
// debt, every refill is used), and the credit is checked against the
// wall clock read around the run. No randomness: the bound is exact.
func TestCoarseClockLongRunRate(t *testing.T) {
	dp := openTest(t)
	var coarse uint32
	dp.objs.KsCoarseClock.Get(&coarse)
	t.Logf("bucket clock: coarse=%d (0: bpf_ktime_get_ns, kernel before 5.11)", coarse)
	const rate = 1e6 // bytes/s; burst 1 MB: the bucket fills from its floor in 2 s
	set(t, dp, rules.Egress, rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: rate * 8, BurstBytes: 1 << 20, Mode: rules.ModeDrop}})
	key := KeyOf(loIfindex, rules.Egress)
	// Empty the bucket first, so that the run starts in debt.
	for range 3000 {
		run(t, dp, rules.Egress, udpPacket(64), nil)
	}
	// The run starts at the refill of one packet sent between t0 and t0b.
	t0 := monotonicNow()
	run(t, dp, rules.Egress, udpPacket(64), nil)
	t0b := monotonicNow()
	var start, end rule
	if err := dp.ruleAt(key, &start); err != nil {
		t.Fatal(err)
	}
	c0 := counters(t, dp, rules.Egress)
	var tLast uint64
	for monotonicNow()-t0 < 1.5e9 {
		tLast = monotonicNow()
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: udpPacket(64), Context: skbCtx{}, Repeat: 20000}); err != nil {
			t.Fatal(err)
		}
	}
	t1 := monotonicNow()
	// How far the coarse clock lags the exact one now: on a loaded VM a
	// tick can come hundreds of ms late, and what it has not counted yet
	// is credited later (not lost): the bound allows for it.
	lag := float64(max(int64(t1)-int64(bucketNow()), 0)) / 1e9 * rate
	if err := dp.ruleAt(key, &end); err != nil {
		t.Fatal(err)
	}
	c1 := counters(t, dp, rules.Egress)
	dropped := c1.DropBytes[ReasonBandwidth] - c0.DropBytes[ReasonBandwidth]
	passed := float64(c1.Bytes-c0.Bytes) - float64(dropped)
	// What the bucket credited: what passed, less what it took from its
	// own level.
	credit := passed + end.Tokens() - start.Tokens()
	wall := float64(t1-t0) / 1e9 * rate
	const tick = 0.010 * rate // HZ >= 100
	t.Logf("%.3f s at %.0f B/s: credited %.0f B, wall clock %.0f B (%+.3f %%), %d packets dropped",
		float64(t1-t0)/1e9, rate, credit, wall, (credit/wall-1)*100, c1.DropPackets[ReasonBandwidth]-c0.DropPackets[ReasonBandwidth])
	if c1.DropPackets[ReasonBandwidth] == c0.DropPackets[ReasonBandwidth] {
		t.Fatal("nothing dropped: the run did not saturate the bucket")
	}
	// The first refill happened in [t0, t0b], the last in [tLast, t1];
	// each clock reading is at most a tick below true time.
	hi := float64(t1-t0)/1e9*rate + tick
	lo := float64(tLast-t0b)/1e9*rate - tick - lag
	if credit > hi || credit < lo {
		t.Fatalf("bucket credited %.0f bytes: outside [%.0f, %.0f], what the wall clock and one tick of the coarse clock allow", credit, lo, hi)
	}
}

// The probes find what the kernel has: the coarse clock from 5.11 and
// atomics from 5.12 (else the programs fall back to the slower paths).
func TestKernelFeatureProbes(t *testing.T) {
	dp := openTest(t)
	var coarse, atomics uint32
	dp.objs.KsCoarseClock.Get(&coarse)
	dp.objs.KsAtomics.Get(&atomics)
	var u unix.Utsname
	unix.Uname(&u)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	t.Logf("kernel %d.%d: coarse clock %d, atomics %d", major, minor, coarse, atomics)
	v := major*1000 + minor
	if (v >= 5011) != (coarse == 1) {
		t.Errorf("kernel %d.%d: coarse clock %d", major, minor, coarse)
	}
	// 5.10 (Debian's) takes a probe's atomics but not the programs': the
	// loader falls back to the lock there.
	if v >= 5012 && atomics != 1 {
		t.Errorf("kernel %d.%d: atomics %d", major, minor, atomics)
	}
}
