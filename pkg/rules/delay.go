package rules

import (
	"fmt"
	"strings"
	"time"
)

// MaxDelay is the longest added latency: beyond it EDT would hold packets
// (and socket memory) for longer than any test of a bad network needs.
const MaxDelay = 10 * time.Second

// delayExample is a valid value, quoted by errors to show the syntax.
const delayExample = "50ms egress; 80ms jitter=10ms ingress"

var delayGrammar = grammar[Delay]{
	example:   delayExample,
	joinUnits: true,
	clause:    parseDelayClause,
	set:       func(dp *DirectionPolicy, d Delay) { dp.Delay = &d },
}

// parseDelayClause reads "DURATION DIR [jitter=DURATION] [TARGET]", words
// in any order.
func parseDelayClause(words []string) (dirSet, Delay, error) {
	var (
		dirs                  dirSet
		d                     Delay
		haveDelay, haveJitter bool
		tb                    targetBuilder
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, d, err
		} else if isDir {
			continue
		}
		name, val, isOpt, err := option(w)
		if err != nil {
			return 0, d, err
		}
		if isOpt {
			if ok, err := tb.handle(name, val); ok {
				if err != nil {
					return 0, d, err
				}
				continue
			}
			if name != "jitter" {
				return 0, d, fmt.Errorf("unknown option %s: delay takes jitter=, to=, port= and proto=", q(name+"="))
			}
			if haveJitter {
				return 0, d, fmt.Errorf("jitter= given twice")
			}
			haveJitter = true
			if d.Jitter, err = parseDuration("jitter", val); err != nil {
				return 0, d, err
			}
			continue
		}
		if haveDelay {
			return 0, d, fmt.Errorf("unexpected word %s: a clause has one delay and one direction (egress, ingress or both)", q(w))
		}
		haveDelay = true
		if d.Delay, err = parseDuration("delay", w); err != nil {
			return 0, d, err
		}
	}
	if !haveDelay {
		return 0, d, fmt.Errorf("no delay: want e.g. %q", delayExample)
	}
	if dirs == 0 {
		return 0, d, errNoDirection
	}
	if d.Delay <= 0 || d.Delay > MaxDelay {
		return 0, d, fmt.Errorf("delay %s is out of range: want more than 0 and at most %s", d.Delay, MaxDelay)
	}
	if d.Jitter < 0 || d.Jitter > d.Delay {
		return 0, d, fmt.Errorf("jitter %s is out of range: want 0 up to the delay (%s)", d.Jitter, d.Delay)
	}
	var err error
	if d.Target, err = tb.finish(); err != nil {
		return 0, d, err
	}
	return dirs, d, nil
}

// parseDuration takes Go's syntax; lower-casing first makes "50MS" work,
// and no Go unit has an upper-case letter.
func parseDuration(what, w string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.ToLower(w))
	if err != nil {
		return 0, fmt.Errorf("%s %s is not a duration: want a number with a unit, such as 50ms, 1.5ms or 2s", what, q(w))
	}
	return d, nil
}

// String renders the rule for humans: "50ms" or "80ms jitter=10ms".
func (d Delay) String() string {
	if d.Jitter == 0 {
		return d.Delay.String() + d.Target.String()
	}
	return d.Delay.String() + " jitter=" + d.Jitter.String() + d.Target.String()
}

func (d Delay) clause(dir string) string {
	s := d.Delay.String() + " " + dir
	if d.Jitter != 0 {
		s += " jitter=" + d.Jitter.String()
	}
	return s + d.Target.String()
}
