package rules

import (
	"fmt"
	"strings"
)

// bandwidthExample is a valid value, quoted by errors to show the syntax.
const bandwidthExample = "10mbps egress; 1gbit ingress burst=64kb mode=pace"

var bandwidthGrammar = grammar[Bandwidth]{
	example:   bandwidthExample,
	joinUnits: true,
	clause:    parseBandwidthClause,
	set:       func(dp *DirectionPolicy, b Bandwidth) { dp.Bandwidth = &b },
}

// parseBandwidthClause reads "RATE DIR [burst=SIZE] [mode=MODE] [TARGET]",
// words in any order.
func parseBandwidthClause(words []string) (dirSet, Bandwidth, error) {
	var (
		dirs                          dirSet
		bw                            = Bandwidth{Mode: ModeDrop}
		haveRate, haveBurst, haveMode bool
		havePacing                    bool
		tb                            targetBuilder
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, bw, err
		} else if isDir {
			continue
		}
		name, val, isOpt, err := option(w)
		if err != nil {
			return 0, bw, err
		}
		if isOpt {
			if ok, err := tb.handle(name, val); ok {
				if err != nil {
					return 0, bw, err
				}
				continue
			}
			switch name {
			case "burst":
				if haveBurst {
					return 0, bw, fmt.Errorf("burst= given twice")
				}
				haveBurst = true
				if bw.BurstBytes, err = parseBurst(val); err != nil {
					return 0, bw, err
				}
			case "mode":
				if haveMode {
					return 0, bw, fmt.Errorf("mode= given twice")
				}
				haveMode = true
				if bw.Mode, err = parseMode(val); err != nil {
					return 0, bw, err
				}
			case "pacing":
				if havePacing {
					return 0, bw, fmt.Errorf("pacing= given twice")
				}
				havePacing = true
				switch strings.ToLower(val) {
				case "off":
					bw.NoSocketPacing = true
				case "on":
				default:
					return 0, bw, fmt.Errorf("pacing=%s: want on (the default: a drop-mode rule paces the pod's TCP sockets) or off (the policer alone)", val)
				}
			default:
				return 0, bw, fmt.Errorf("unknown option %s: bandwidth takes burst=, mode=, pacing=, to=, port= and proto=", q(name+"="))
			}
			continue
		}
		if haveRate {
			return 0, bw, fmt.Errorf("unexpected word %s: a clause has one rate and one direction (egress, ingress or both)", q(w))
		}
		haveRate = true
		if bw.RateBitsPerSec, err = parseRate(w); err != nil {
			return 0, bw, err
		}
	}
	if !haveRate {
		return 0, bw, fmt.Errorf("no rate: want e.g. %q", bandwidthExample)
	}
	if dirs == 0 {
		return 0, bw, errNoDirection
	}
	t, err := tb.finish()
	if err != nil {
		return 0, bw, err
	}
	bw.Target = t
	if err := bw.Check(); err != nil {
		return 0, bw, err
	}
	return dirs, bw, nil
}

// Check refuses what the grammar refuses of a rule already typed: a tbf
// limited to some packets. The datapath checks policies built in code
// with it too.
func (b Bandwidth) Check() error {
	if !b.Target.IsZero() && b.Mode == ModeTBF {
		return fmt.Errorf("mode=tbf shapes all the pod's traffic in that direction: to=, port= and proto= need mode=drop or mode=pace")
	}
	return nil
}

func parseMode(v string) (BandwidthMode, error) {
	switch m := BandwidthMode(strings.ToLower(v)); m {
	case ModeDrop, ModePace, ModeTBF:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %s: want drop (token bucket, the default), pace (EDT, needs fq) or tbf (kernel qdisc)", q(v))
}

// String renders the rule for humans: "10mbit burst=auto mode=drop".
func (b Bandwidth) String() string {
	burst := "auto"
	if b.BurstBytes != 0 {
		burst = formatSize(b.BurstBytes)
	}
	mode := b.Mode
	if mode == "" {
		mode = ModeDrop
	}
	pacing := ""
	if b.NoSocketPacing {
		pacing = " pacing=off"
	}
	return fmt.Sprintf("%s burst=%s mode=%s%s%s", formatRate(b.RateBitsPerSec), burst, mode, pacing, b.Target)
}

// clause renders the rule as annotation text, defaults left out.
func (b Bandwidth) clause(dir string) string {
	s := formatRate(b.RateBitsPerSec) + " " + dir
	if b.BurstBytes != 0 {
		s += " burst=" + formatSize(b.BurstBytes)
	}
	if b.Mode != "" && b.Mode != ModeDrop {
		s += " mode=" + string(b.Mode)
	}
	if b.NoSocketPacing {
		s += " pacing=off"
	}
	return s + b.Target.String()
}
