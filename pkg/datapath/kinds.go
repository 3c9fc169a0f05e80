package datapath

import (
	"fmt"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// kindMap is how one kind of rule (a row of pkg/rules' kinds table, by
// name) becomes part of the datapath's value. ConfigFor, the targets and
// String are loops over the table: a new kind is a row here (and its
// fields in Config and value.go, and its bits in the C), not a branch in
// each of them.
type kindMap struct {
	// gates are the flag bits of the kind's rule that its target gates.
	gates flag
	// set writes the kind's rule (its *T from rules.Kind.Rule) into c.
	set func(c *Config, rule any) error
	// text renders c's rule of this kind in the annotation grammar,
	// without its target; "" when c has none.
	text func(c Config) string
}

// mapKind builds a row from typed functions of the kind's rule type T.
func mapKind[T any](gates flag, set func(*Config, *T) error, text func(Config) string) kindMap {
	return kindMap{gates: gates, set: func(c *Config, r any) error { return set(c, r.(*T)) }, text: text}
}

// kindMaps has a row for every kind of pkg/rules (TestEveryKindMapped);
// ConfigFor refuses the rules of a kind without one.
var kindMaps = map[string]kindMap{
	"bandwidth": mapKind(fRate|fPace, setBandwidth, bandwidthText),
	"loss":      mapKind(fLoss|fGilbert, setLoss, lossText),
	"delay":     mapKind(fDelay, setDelay, delayText),
	"duplicate": shareKind[rules.Duplicate](fDup, "duplicate", func(c *Config) *uint64 { return &c.DupThresh }),
	"corrupt":   shareKind[rules.Corrupt](fCorrupt, "corrupt", func(c *Config) *uint64 { return &c.CorruptThresh }),
	// A custom program is not part of this value: it is a program of its
	// own, loaded and attached beside kubeshaper's (custom.go).
	"program": {},
}

// kindMapOf is the row of kind k.
func kindMapOf(k rules.Kind) (kindMap, error) {
	m, ok := kindMaps[k.Name()]
	if !ok {
		return m, fmt.Errorf("%s rules have no mapping to the datapath's value (pkg/datapath/kinds.go)", k.Name())
	}
	return m, nil
}

func setBandwidth(c *Config, bw *rules.Bandwidth) error {
	if err := bw.Check(); err != nil {
		return err
	}
	rate := bw.RateBitsPerSec / 8
	if rate == 0 {
		return fmt.Errorf("bandwidth %d bit/s is below one byte per second", bw.RateBitsPerSec)
	}
	c.Rate = rate
	switch bw.Mode {
	case rules.ModeDrop, "":
		c.flags |= fRate | fSparse
		c.Burst = bw.BurstBytes
		if c.Burst == 0 {
			c.Burst = DefaultBurst(bw.RateBitsPerSec)
		}
		if c.Burst > MaxBurst {
			return fmt.Errorf("burst %d bytes is above kubeshaper's largest bucket, %d bytes", c.Burst, uint64(MaxBurst))
		}
	case rules.ModePace:
		c.flags |= fPace
	case rules.ModeTBF:
		// The kernel's tbf enforces; the program only counts. Rate and
		// burst are kept so that status shows what the tbf was given.
		c.flags |= fQdisc
		c.Burst = bw.BurstBytes
		if c.Burst == 0 {
			c.Burst = DefaultTBFBurst(bw.RateBitsPerSec)
		}
	default:
		return fmt.Errorf("unknown bandwidth mode %q", bw.Mode)
	}
	return nil
}

func bandwidthText(c Config) string {
	switch {
	case c.flags&fRate != 0:
		return fmt.Sprintf("bandwidth %s burst=%d mode=drop", bitRate(c.Rate*8), c.Burst)
	case c.flags&fPace != 0:
		return fmt.Sprintf("bandwidth %s mode=pace", bitRate(c.Rate*8))
	case c.flags&fQdisc != 0:
		return fmt.Sprintf("bandwidth %s burst=%d mode=tbf", bitRate(c.Rate*8), c.Burst)
	}
	return ""
}

func setLoss(c *Config, l *rules.Loss) error {
	if l.Kind == rules.LossGilbert {
		g := l.Gilbert
		c.flags |= fGilbert
		c.Gilbert = Gilbert{
			P:        rules.Threshold32(g.P / 100),
			R:        rules.Threshold32(g.R / 100),
			H:        rules.Threshold32(g.H / 100),
			LossGood: rules.Threshold32(1 - g.K/100),
		}
		return nil
	}
	c.flags |= fLoss
	c.LossThresh = l.Threshold32()
	return nil
}

func lossText(c Config) string {
	switch {
	case c.flags&fGilbert != 0:
		g := c.Gilbert
		return fmt.Sprintf("loss gilbert p=%s r=%s h=%s k=%s", pct(g.P), pct(g.R), pct(g.H), pct(1<<32-g.LossGood))
	case c.flags&fLoss != 0:
		return fmt.Sprintf("loss %.6g%%", c.LossProbability()*100)
	}
	return ""
}

func setDelay(c *Config, d *rules.Delay) error {
	c.flags |= fDelay
	c.Delay, c.Jitter = d.Delay, d.Jitter
	return nil
}

func delayText(c Config) string {
	if c.flags&fDelay == 0 {
		return ""
	}
	s := "delay " + c.Delay.String()
	if c.Jitter != 0 {
		s += " jitter=" + c.Jitter.String()
	}
	return s
}

// shareKind is the row of a kind that acts on a share of the packets
// (duplicate, corrupt): one flag, one threshold.
func shareKind[T interface{ Probability() float64 }](f flag, name string, thresh func(*Config) *uint64) kindMap {
	return mapKind(f,
		func(c *Config, r *T) error {
			c.flags |= f
			*thresh(c) = rules.Threshold32((*r).Probability())
			return nil
		},
		func(c Config) string {
			if c.flags&f == 0 {
				return ""
			}
			return name + " " + pct(*thresh(&c))
		})
}

// horizon is how far ahead EDT may schedule a packet: a delay's reach on
// top of the default (pace and delay).
func horizon(c Config) time.Duration {
	if c.flags&(fPace|fDelay) == 0 {
		return 0
	}
	return DefaultHorizon + c.Delay + c.Jitter
}
