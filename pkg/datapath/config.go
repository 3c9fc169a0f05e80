package datapath

import (
	"math/bits"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Tunables of the drop-mode policer. The reasoning and the measurements
// behind them are in the README (§ Bandwidth: how accurate and why).
const (
	// BurstTime sizes the default bucket: burst = rate × BurstTime. A TCP
	// flow that overruns a policer loses a window and, on a veth's ~30 µs
	// RTT, waits out its 200 ms minimum RTO (more with backoff); a bucket
	// that stores what accrues during that wait keeps the long-run rate at
	// the target. Measured here (iperf3, 10 s, 10M/100M/1G): 200 ms gave
	// wire ratios 0.95-0.96, 500 ms and 1 s 0.99-1.00; the larger bucket
	// only lengthens the line-rate burst after an idle spell.
	BurstTime = 500 * time.Millisecond
	// MinBurst is the smallest default bucket: one 64 KB GSO skb plus a
	// few MTU-sized packets, below which GSO traffic cannot pass at all.
	MinBurst = 128 << 10
	// GSODebt is how far a packet may take the bucket below zero: one full
	// GSO skb (64 KB of payload plus its per-segment headers).
	GSODebt = 64<<10 + 45*66
	// SparseMax is the size up to which a packet counts as sparse (an
	// ACK, a ping, a DNS query) and may use the deeper debt.
	SparseMax = 256
	// TBFBurstTime sizes the default tbf bucket (mode=tbf).
	TBFBurstTime = 20 * time.Millisecond
	// MaxBurst bounds a drop-mode bucket (the default rate × BurstTime is
	// clamped to it, above 8.6 Gbit/s): the bucket's 32.32 fixed point
	// must hold three bursts (bpf/shaper.c, bucket_admit).
	MaxBurst = 512 << 20
	// DefaultHorizon is how far in the future EDT may schedule a packet
	// before it is dropped instead (reason "horizon").
	DefaultHorizon = 2 * time.Second
)

// flag is a bit of the rule's flags (enum ks_flags of bpf/shaper.h).
type flag uint32

const (
	fRate     = flag(shaperKsFlagsKS_F_RATE)
	fPace     = flag(shaperKsFlagsKS_F_PACE)
	fLoss     = flag(shaperKsFlagsKS_F_LOSS)
	fDelay    = flag(shaperKsFlagsKS_F_DELAY)
	fSparse   = flag(shaperKsFlagsKS_F_SPARSE)
	fQdisc    = flag(shaperKsFlagsKS_F_QDISC)
	fAtPod    = flag(shaperKsFlagsKS_F_AT_POD)
	fFlows    = flag(shaperKsFlagsKS_F_FLOWS)
	fTargeted = flag(shaperKsFlagsKS_F_TARGETED)
	fGilbert  = flag(shaperKsFlagsKS_F_GILBERT)
	fDup      = flag(shaperKsFlagsKS_F_DUP)
	fCorrupt  = flag(shaperKsFlagsKS_F_CORRUPT)
	fSet      = flag(shaperKsFlagsKS_F_SET)
)

// Config is what one {interface, direction}'s rule asks of the datapath,
// in the datapath's units: bytes, durations, probabilities as thresholds
// on a random u32 (rules.Threshold32). It is this package's own value: the
// map value it is written as (struct ks_rule) also holds the bucket's
// running state and what follows from the rule (fixed-point rate, debt,
// fill time), which only Set and the programs see (value.go).
type Config struct {
	flags flag // which rules are set, and how

	// Rate is the bandwidth in bytes per second (0: no bandwidth rule).
	Rate uint64
	// Burst is the bucket in bytes: the policer's (mode=drop) or the one
	// the tbf qdisc is given (mode=tbf).
	Burst uint64
	// LossThresh drops a packet when a random u32 is below it.
	LossThresh uint64
	// Gilbert is the Gilbert-Elliott loss model.
	Gilbert Gilbert
	// Delay and Jitter hold packets back (EDT).
	Delay, Jitter time.Duration
	// DupThresh and CorruptThresh duplicate and corrupt a packet when a
	// random u32 is below them.
	DupThresh, CorruptThresh uint64
	// Horizon is how far in the future EDT may schedule a packet before
	// it is dropped instead (pace and delay).
	Horizon time.Duration
	// Targets are the rule's targets in the order of the policy's
	// Targets(): bit i of a ks_peers entry (PeersFor) is Targets[i].
	Targets []Target
}

// Gilbert is the Gilbert-Elliott loss model as thresholds on a random
// u32: P (good to bad), R (bad to good), H (delivery in the bad state)
// and LossGood (loss in the good state, 1-k).
type Gilbert struct{ P, R, H, LossGood uint64 }

// ConfigFor translates a direction's typed policy into the value the
// programs read, kind by kind (kinds.go). Rates are converted to bytes
// once, here. A config that ConfigFor returns fits the map value (Set
// does not fail on it).
func ConfigFor(p rules.DirectionPolicy) (Config, error) {
	var c Config
	for _, k := range rules.Kinds() {
		r := k.Rule(p)
		if r == nil {
			continue
		}
		m, err := kindMapOf(k)
		if err != nil {
			return c, err
		}
		if m.set == nil {
			continue
		}
		if err := m.set(&c, r); err != nil {
			return c, err
		}
	}
	c.Horizon = horizon(c)
	if err := c.setTargets(p); err != nil {
		return c, err
	}
	// The targets' port ranges are shared in the map value: whether they
	// fit is known once they are compiled.
	if _, err := c.value(); err != nil {
		return c, err
	}
	return c, nil
}

// DefaultBurst is the bucket size used when a rule names none.
func DefaultBurst(rateBitsPerSec uint64) uint64 {
	b := rateBitsPerSec / 8 * uint64(BurstTime) / uint64(time.Second)
	return min(max(b, MinBurst), MaxBurst)
}

// DefaultTBFBurst is the tbf bucket used when a rule names none. A queue,
// unlike a policer, needs no burst to ride out TCP's timeouts, only to
// absorb the dequeue timer's lateness on a busy CPU: 5 ms of the rate fell
// 3-5 % short at 1-5 Gbit/s on this loaded 2-core machine, 200 ms (the CNI
// plugin's choice) holds the rate but passes 200 ms at line rate after idle;
// 20 ms (and at least two 64 KB GSO skbs) is the compromise.
func DefaultTBFBurst(rateBitsPerSec uint64) uint64 {
	b := rateBitsPerSec / 8 * uint64(TBFBurstTime) / uint64(time.Second)
	return max(b, MinBurst)
}

// Corrupts reports whether the config corrupts packets.
func (c Config) Corrupts() bool { return c.flags&fCorrupt != 0 }

// UsesTBF reports whether a kernel tbf qdisc enforces the rate.
func (c Config) UsesTBF() bool { return c.flags&fQdisc != 0 }

// SetAtPod marks the rule as handled by the pod-side program (pod egress
// with EDT); the host-side program then leaves it alone.
func (c *Config) SetAtPod() { c.flags |= fAtPod }

// NeedsFQ reports whether the config relies on an fq qdisc (EDT).
func (c Config) NeedsFQ() bool {
	return c.flags&(fPace|fDelay) != 0
}

// rateQ32 is bytes/s as bytes per nanosecond in 32.32 fixed point,
// rounded to nearest: rate × 2^32 / 1e9 without overflowing 64 bits.
func rateQ32(bytesPerSec uint64) uint64 {
	hi, lo := bits.Mul64(bytesPerSec, 1<<32)
	q, r := bits.Div64(hi, lo, 1e9)
	if r >= 5e8 {
		q++
	}
	return q
}

// AtPod reports whether the direction is handled by the pod-side program.
func (c Config) AtPod() bool { return c.flags&fAtPod != 0 }
