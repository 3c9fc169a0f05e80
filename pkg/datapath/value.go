package datapath

import (
	"fmt"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// rule is the map value of ks_rules (struct ks_rule): a Config, what
// follows from it, and the state the programs keep (bucket level, last
// refill, next departure, the Gilbert chain's state). Only this package
// sees it.
type rule = shaperKsRule

// Tokens is the bucket's level in bytes (negative: in debt).
func (r rule) Tokens() float64 { return float64(r.TokensQ32) / (1 << 32) }

// value is c as the map value, state left zero. It fails when c's
// targets do not fit the value's sets of targets.
func (c Config) value() (rule, error) {
	r := rule{
		Flags:         uint32(c.flags &^ (fTargeted | fSet)),
		Rate:          c.Rate,
		Burst:         c.Burst,
		LossThresh:    c.LossThresh,
		GeP:           c.Gilbert.P,
		GeR:           c.Gilbert.R,
		GeH:           c.Gilbert.H,
		Ge1k:          c.Gilbert.LossGood,
		DelayNs:       uint64(c.Delay),
		JitterNs:      uint64(c.Jitter),
		DupThresh:     c.DupThresh,
		CorruptThresh: c.CorruptThresh,
		HorizonNs:     uint64(c.Horizon),
	}
	if c.Rate > 0 {
		r.RateQ32 = rateQ32(c.Rate)
	}
	if c.flags&fRate != 0 && c.Rate > 0 {
		r.Debt = min(uint64(GSODebt), c.Burst)
		r.SparseMax = SparseMax
		// The time from the deepest floor (-burst, sparse packets) to a
		// full bucket: a clock that jumps (a late tick of the coarse
		// clock) is credited in full up to it (bpf/shaper.c).
		r.FillNs = 2*c.Burst*uint64(time.Second)/c.Rate + 1
	}
	if len(c.Targets) > 0 {
		if err := compileTargets(&r.Tg, c.Targets); err != nil {
			return r, err
		}
		r.Flags |= uint32(fTargeted)
	}
	return r, nil
}

// configOf reads a map value back as the Config it was written from.
func configOf(r rule) Config {
	c := Config{
		flags:         flag(r.Flags) &^ (fTargeted | fSet),
		Rate:          r.Rate,
		Burst:         r.Burst,
		LossThresh:    r.LossThresh,
		Gilbert:       Gilbert{P: r.GeP, R: r.GeR, H: r.GeH, LossGood: r.Ge1k},
		Delay:         time.Duration(r.DelayNs),
		Jitter:        time.Duration(r.JitterNs),
		DupThresh:     r.DupThresh,
		CorruptThresh: r.CorruptThresh,
		Horizon:       time.Duration(r.HorizonNs),
	}
	if flag(r.Flags)&fTargeted != 0 {
		c.Targets = targetsOf(&r.Tg)
	}
	return c
}

// protoSets are the sets of targets of each protocol condition.
func protoSets(tg *shaperKsTargets) []struct {
	set   *uint8
	proto rules.Proto
} {
	return []struct {
		set   *uint8
		proto rules.Proto
	}{{&tg.AnyProto, rules.ProtoAny}, {&tg.Tcp, rules.ProtoTCP}, {&tg.Udp, rules.ProtoUDP}, {&tg.Sctp, rules.ProtoSCTP}, {&tg.Icmp, rules.ProtoICMP}}
}

// compileTargets writes targets into the value's sets of targets (struct
// ks_targets): bit i of every set is targets[i].
func compileTargets(tg *shaperKsTargets, targets []Target) error {
	if len(targets) > maxTargets {
		return fmt.Errorf("%d different targets in one direction: the datapath holds %d", len(targets), maxTargets)
	}
	for i, t := range targets {
		bit := uint8(1) << i
		tg.Flags[i] = uint32(t.gates)
		known := false
		for _, p := range protoSets(tg) {
			if p.proto == t.Proto {
				*p.set |= bit
				known = true
			}
		}
		if !known {
			return fmt.Errorf("unknown protocol %q", t.Proto)
		}
		if !t.Peers {
			tg.AnyPeer |= bit
		}
		if len(t.Ports) == 0 {
			tg.AnyPort |= bit
		}
	rangeLoop:
		for _, r := range t.Ports {
			for j := range tg.Nranges {
				if e := &tg.Ranges[j]; e.Lo == r.Lo && e.Hi == r.Hi {
					e.Targets |= bit
					continue rangeLoop
				}
			}
			if int(tg.Nranges) == maxRanges {
				return fmt.Errorf("more than %d port ranges in one direction", maxRanges)
			}
			tg.Ranges[tg.Nranges] = shaperKsPortRange{Lo: r.Lo, Hi: r.Hi, Targets: bit}
			tg.Nranges++
		}
	}
	return nil
}

// targetsOf reads the sets of targets back. Every target has exactly one
// protocol condition, so the targets are the bits some protocol set holds.
func targetsOf(tg *shaperKsTargets) []Target {
	var out []Target
	for i := range maxTargets {
		bit := uint8(1) << i
		t := Target{gates: flag(tg.Flags[i]), Peers: tg.AnyPeer&bit == 0}
		found := false
		for _, p := range protoSets(tg) {
			if *p.set&bit != 0 {
				t.Proto, found = p.proto, true
			}
		}
		if !found {
			break
		}
		if tg.AnyPort&bit == 0 {
			for _, r := range tg.Ranges[:min(int(tg.Nranges), maxRanges)] {
				if r.Targets&bit != 0 {
					t.Ports = append(t.Ports, rules.PortRange{Lo: r.Lo, Hi: r.Hi})
				}
			}
		}
		out = append(out, t)
	}
	return out
}
