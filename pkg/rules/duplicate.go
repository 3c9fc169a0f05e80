package rules

import "fmt"

// Examples quoted by errors to show the syntax.
const (
	duplicateExample = "egress 1%"
	corruptExample   = "ingress 0.1%"
)

var duplicateGrammar = grammar[Duplicate]{
	example:   duplicateExample,
	joinUnits: true,
	clause: func(words []string) (dirSet, Duplicate, error) {
		dirs, pct, t, err := parseChanceClause("duplicate", duplicateExample, words)
		return dirs, Duplicate{Percent: pct, Target: t}, err
	},
	set: func(dp *DirectionPolicy, d Duplicate) { dp.Duplicate = &d },
}

var corruptGrammar = grammar[Corrupt]{
	example:   corruptExample,
	joinUnits: true,
	clause: func(words []string) (dirSet, Corrupt, error) {
		dirs, pct, t, err := parseChanceClause("corrupt", corruptExample, words)
		return dirs, Corrupt{Percent: pct, Target: t}, err
	},
	set: func(dp *DirectionPolicy, c Corrupt) { dp.Corrupt = &c },
}

// parseChanceClause reads "DIR PERCENT [TARGET]", words in any order.
func parseChanceClause(what, example string, words []string) (dirSet, float64, Target, error) {
	var (
		dirs   dirSet
		amount string
		tb     targetBuilder
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, 0, Target{}, err
		} else if isDir {
			continue
		}
		name, val, isOpt, err := option(w)
		if err != nil {
			return 0, 0, Target{}, err
		}
		if isOpt {
			if ok, err := tb.handle(name, val); ok {
				if err != nil {
					return 0, 0, Target{}, err
				}
				continue
			}
			return 0, 0, Target{}, fmt.Errorf("unknown option %s: %s takes to=, port= and proto=", q(name+"="), what)
		}
		if amount != "" {
			return 0, 0, Target{}, fmt.Errorf("unexpected word %s after %s: want e.g. %q", q(w), q(amount), example)
		}
		amount = w
	}
	if amount == "" {
		return 0, 0, Target{}, fmt.Errorf("no percentage: want e.g. %q", example)
	}
	if dirs == 0 {
		return 0, 0, Target{}, errNoDirection
	}
	pct, err := parsePercent(what, amount)
	if err != nil {
		return 0, 0, Target{}, err
	}
	t, err := tb.finish()
	return dirs, pct, t, err
}

// Probability is the chance a packet is duplicated, in [0,1].
func (d Duplicate) Probability() float64 { return min(max(d.Percent/100, 0), 1) }

// Probability is the chance a packet is corrupted, in [0,1].
func (c Corrupt) Probability() float64 { return min(max(c.Percent/100, 0), 1) }

// String renders the rule for humans: "1%" or "1% port=53".
func (d Duplicate) String() string { return formatPercent(d.Percent) + d.Target.String() }
func (c Corrupt) String() string   { return formatPercent(c.Percent) + c.Target.String() }

func (d Duplicate) clause(dir string) string {
	return dir + " " + formatPercent(d.Percent) + d.Target.String()
}

func (c Corrupt) clause(dir string) string {
	return dir + " " + formatPercent(c.Percent) + c.Target.String()
}
