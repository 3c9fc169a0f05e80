package datapath

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// String renders what the config makes the datapath do, in the words of
// the annotation grammar, e.g. "bandwidth 100mbit burst=2500000 mode=drop;
// loss 1%". A config with no rule reads "monitor".
func (c Config) String() string {
	var parts []string
	for _, k := range rules.Kinds() {
		if m := kindMaps[k.Name()]; m.text != nil {
			if t := m.text(c); t != "" {
				parts = append(parts, t+c.targetOf(m.gates))
			}
		}
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

// targetOf renders the target gating flag f (peer prefixes live in
// ks_peers: "to=…" only says there are some), or "" for a rule on every
// packet.
func (c Config) targetOf(f flag) string {
	for _, t := range c.Targets {
		if t.gates&f == 0 {
			continue
		}
		var b strings.Builder
		if t.Peers {
			b.WriteString(" to=…")
		}
		if len(t.Ports) > 0 {
			ports := make([]string, len(t.Ports))
			for i, r := range t.Ports {
				ports[i] = r.String()
			}
			b.WriteString(" port=" + strings.Join(ports, ","))
		}
		if t.Proto != rules.ProtoAny {
			b.WriteString(" proto=" + string(t.Proto))
		}
		return b.String()
	}
	return ""
}

// LossProbability is the drop probability the loss threshold encodes.
func (c Config) LossProbability() float64 {
	if c.flags&fLoss == 0 {
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
