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
		parts = append(parts, fmt.Sprintf("bandwidth %s burst=%d mode=drop", bitRate(c.Rate*8), c.Burst)+c.targetOf(shaperKsFlagsKS_F_RATE))
	case c.Flags&uint32(shaperKsFlagsKS_F_PACE) != 0:
		parts = append(parts, fmt.Sprintf("bandwidth %s mode=pace", bitRate(c.Rate*8))+c.targetOf(shaperKsFlagsKS_F_PACE))
	case c.UsesTBF():
		parts = append(parts, fmt.Sprintf("bandwidth %s burst=%d mode=tbf", bitRate(c.Rate*8), c.Burst))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_LOSS) != 0 {
		parts = append(parts, fmt.Sprintf("loss %.6g%%", c.LossProbability()*100)+c.targetOf(shaperKsFlagsKS_F_LOSS))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_GILBERT) != 0 {
		parts = append(parts, fmt.Sprintf("loss gilbert p=%s r=%s h=%s k=%s", pct(c.GeP), pct(c.GeR), pct(c.GeH), pct(1<<32-c.Ge1k))+c.targetOf(shaperKsFlagsKS_F_GILBERT))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_DELAY) != 0 {
		d := fmt.Sprintf("delay %s", time.Duration(c.DelayNs))
		if c.JitterNs != 0 {
			d += fmt.Sprintf(" jitter=%s", time.Duration(c.JitterNs))
		}
		parts = append(parts, d+c.targetOf(shaperKsFlagsKS_F_DELAY))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_DUP) != 0 {
		parts = append(parts, "duplicate "+pct(c.DupThresh)+c.targetOf(shaperKsFlagsKS_F_DUP))
	}
	if c.Flags&uint32(shaperKsFlagsKS_F_CORRUPT) != 0 {
		parts = append(parts, "corrupt "+pct(c.CorruptThresh)+c.targetOf(shaperKsFlagsKS_F_CORRUPT))
	}
	if len(parts) == 0 {
		return "monitor"
	}
	return strings.Join(parts, "; ")
}

// pct renders a threshold on a random u32 as a percentage.
func pct(thresh uint64) string {
	return strconv.FormatFloat(float64(thresh)/(1<<32)*100, 'g', 6, 64) + "%"
}

// targetOf renders the target gating flag f, as far as the rule holds it
// (peer prefixes live in ks_peers: "to=…" only says there are some), or
// "" for a rule on every packet.
func (c Config) targetOf(f shaperKsFlags) string {
	if !c.Targeted() {
		return ""
	}
	tg := c.Tg
	for i := range tg.Flags {
		if tg.Flags[i]&uint32(f) == 0 {
			continue
		}
		bit := uint8(1) << i
		var b strings.Builder
		if tg.AnyPeer&bit == 0 {
			b.WriteString(" to=…")
		}
		if tg.AnyPort&bit == 0 {
			var ports []string
			for _, r := range tg.Ranges[:tg.Nranges] {
				if r.Targets&bit == 0 {
					continue
				}
				if r.Lo == r.Hi {
					ports = append(ports, strconv.Itoa(int(r.Lo)))
				} else {
					ports = append(ports, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
				}
			}
			b.WriteString(" port=" + strings.Join(ports, ","))
		}
		if tg.AnyProto&bit == 0 {
			for _, p := range []struct {
				set  uint8
				name string
			}{{tg.Tcp, "tcp"}, {tg.Udp, "udp"}, {tg.Sctp, "sctp"}, {tg.Icmp, "icmp"}} {
				if p.set&bit != 0 {
					b.WriteString(" proto=" + p.name)
				}
			}
		}
		return b.String()
	}
	return ""
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
