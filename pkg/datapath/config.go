package datapath

import (
	"fmt"
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

// Config is one {interface, direction}'s rule as the datapath reads it
// (its state fields are the datapath's and are carried over by Set).
type Config = shaperKsRule

// ConfigFor translates a direction's typed policy into the map value the
// programs read. Rates are converted to bytes once, here.
func ConfigFor(p rules.DirectionPolicy) (Config, error) {
	var c Config
	if bw := p.Bandwidth; bw != nil {
		rate := bw.RateBitsPerSec / 8
		if rate == 0 {
			return c, fmt.Errorf("bandwidth %d bit/s is below one byte per second", bw.RateBitsPerSec)
		}
		c.Rate = rate
		c.RateQ32 = rateQ32(rate)
		switch bw.Mode {
		case rules.ModeDrop, "":
			c.Flags |= uint32(shaperKsFlagsKS_F_RATE | shaperKsFlagsKS_F_SPARSE)
			c.Burst = bw.BurstBytes
			if c.Burst == 0 {
				c.Burst = DefaultBurst(bw.RateBitsPerSec)
			}
			if c.Burst > MaxBurst {
				return c, fmt.Errorf("burst %d bytes is above kubeshaper's largest bucket, %d bytes", c.Burst, uint64(MaxBurst))
			}
			c.Debt = min(uint64(GSODebt), c.Burst)
			c.SparseMax = SparseMax
			// The time from the deepest floor (-burst, sparse packets) to
			// a full bucket: a clock that jumps (a late tick of the coarse
			// clock) is credited in full up to it (bpf/shaper.c).
			c.FillNs = 2*c.Burst*uint64(time.Second)/rate + 1
		case rules.ModePace:
			c.Flags |= uint32(shaperKsFlagsKS_F_PACE)
		case rules.ModeTBF:
			// The kernel's tbf enforces; the program only counts. Rate and
			// burst are kept so that status shows what the tbf was given.
			c.Flags |= uint32(shaperKsFlagsKS_F_QDISC)
			c.Burst = bw.BurstBytes
			if c.Burst == 0 {
				c.Burst = DefaultTBFBurst(bw.RateBitsPerSec)
			}
		default:
			return c, fmt.Errorf("unknown bandwidth mode %q", bw.Mode)
		}
	}
	if l := p.Loss; l != nil {
		if l.Kind == rules.LossGilbert {
			g := l.Gilbert
			c.Flags |= uint32(shaperKsFlagsKS_F_GILBERT)
			c.GeP = rules.Threshold32(g.P / 100)
			c.GeR = rules.Threshold32(g.R / 100)
			c.GeH = rules.Threshold32(g.H / 100)
			c.Ge1k = rules.Threshold32(1 - g.K/100)
		} else {
			c.Flags |= uint32(shaperKsFlagsKS_F_LOSS)
			c.LossThresh = l.Threshold32()
		}
	}
	if d := p.Delay; d != nil {
		c.Flags |= uint32(shaperKsFlagsKS_F_DELAY)
		c.DelayNs = uint64(d.Delay)
		c.JitterNs = uint64(d.Jitter)
	}
	if d := p.Duplicate; d != nil {
		c.Flags |= uint32(shaperKsFlagsKS_F_DUP)
		c.DupThresh = rules.Threshold32(d.Probability())
	}
	if d := p.Corrupt; d != nil {
		c.Flags |= uint32(shaperKsFlagsKS_F_CORRUPT)
		c.CorruptThresh = rules.Threshold32(d.Probability())
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_PACE|shaperKsFlagsKS_F_DELAY) != 0 {
		c.HorizonNs = uint64(DefaultHorizon) + c.DelayNs + c.JitterNs
	}
	if err := c.setTargets(p); err != nil {
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
func (c Config) Corrupts() bool { return c.Flags&uint32(shaperKsFlagsKS_F_CORRUPT) != 0 }

// UsesTBF reports whether a kernel tbf qdisc enforces the rate.
func (c Config) UsesTBF() bool { return c.Flags&uint32(shaperKsFlagsKS_F_QDISC) != 0 }

// SetAtPod marks the rule as handled by the pod-side program (pod egress
// with EDT); the host-side program then leaves it alone.
func (c *Config) SetAtPod() { c.Flags |= uint32(shaperKsFlagsKS_F_AT_POD) }

// NeedsFQ reports whether the config relies on an fq qdisc (EDT).
func (c Config) NeedsFQ() bool {
	return c.Flags&uint32(shaperKsFlagsKS_F_PACE|shaperKsFlagsKS_F_DELAY) != 0
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

// Tokens is the bucket's level in bytes (negative: in debt).
func (c Config) Tokens() float64 { return float64(c.TokensQ32) / (1 << 32) }

// AtPod reports whether the direction is handled by the pod-side program.
func (c Config) AtPod() bool { return c.Flags&uint32(shaperKsFlagsKS_F_AT_POD) != 0 }
