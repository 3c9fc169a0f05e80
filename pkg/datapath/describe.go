package datapath

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// String renders what the config makes the datapath do, in the words of
// the annotation grammar, e.g. "bandwidth 100mbit burst=2500000 mode=drop;
// loss 1%". A config with no rule reads "monitor".
func (c Config) String() string {
	var parts []string
	switch {
	case c.Flags&uint32(shaperKsFlagsKS_F_RATE) != 0:
		parts = append(parts, fmt.Sprintf("bandwidth %s burst=%d mode=drop", bitRate(c.Rate*8), c.Burst))
	case c.Flags&uint32(shaperKsFlagsKS_F_PACE) != 0:
		parts = append(parts, fmt.Sprintf("bandwidth %s mode=pace", bitRate(c.Rate*8)))
	case c.UsesTBF():
		parts = append(parts, fmt.Sprintf("bandwidth %s burst=%d mode=tbf", bitRate(c.Rate*8), c.Burst))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_LOSS) != 0 {
		parts = append(parts, fmt.Sprintf("loss %.6g%%", c.LossProbability()*100))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_DELAY) != 0 {
		d := fmt.Sprintf("delay %s", time.Duration(c.DelayNs))
		if c.JitterNs != 0 {
			d += fmt.Sprintf(" jitter=%s", time.Duration(c.JitterNs))
		}
		parts = append(parts, d)
	}
	if len(parts) == 0 {
		return "monitor"
	}
	return strings.Join(parts, "; ")
}

// LossProbability is the drop probability the loss threshold encodes.
func (c Config) LossProbability() float64 {
	if c.Flags&uint32(shaperKsFlagsKS_F_LOSS) == 0 {
		return 0
	}
	return float64(c.LossThresh) / (1 << 32)
}

// RateBits is the configured rate in bits per second (0: none).
func (c Config) RateBits() uint64 { return c.Rate * 8 }

func bitRate(v uint64) string {
	switch {
	case v >= 1e9 && v%1e7 == 0:
		return trimFloat(float64(v)/1e9) + "gbit"
	case v >= 1e6 && v%1e4 == 0:
		return trimFloat(float64(v)/1e6) + "mbit"
	case v >= 1e3 && v%10 == 0:
		return trimFloat(float64(v)/1e3) + "kbit"
	}
	return fmt.Sprintf("%dbit", v)
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
