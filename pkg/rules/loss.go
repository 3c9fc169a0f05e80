package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxLossThreshold is the largest exponential threshold t (P = e^-10).
const MaxLossThreshold = 1000

// lossExample is a valid value, quoted by errors to show the syntax.
const lossExample = "uniform egress 2%; exponential ingress 300"

var lossGrammar = grammar[Loss]{
	example:   lossExample,
	joinUnits: true,
	clause:    parseLossClause,
	set:       func(dp *DirectionPolicy, l Loss) { dp.Loss = &l },
}

// parseLossClause reads "uniform DIR PERCENT" or "exponential DIR T"; the
// distribution and the direction may come in either order.
func parseLossClause(words []string) (dirSet, Loss, error) {
	var (
		dirs   dirSet
		kind   LossKind
		amount string
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, Loss{}, err
		} else if isDir {
			continue
		}
		if k := LossKind(strings.ToLower(w)); k == LossUniform || k == LossExponential {
			if kind != "" {
				return 0, Loss{}, fmt.Errorf("second distribution %s: a clause is either uniform or exponential", q(w))
			}
			kind = k
			continue
		}
		if _, _, isNum := splitNumber(w); !isNum && kind == "" {
			return 0, Loss{}, fmt.Errorf("unknown distribution %s: want uniform or exponential", q(w))
		}
		if amount != "" {
			return 0, Loss{}, fmt.Errorf("unexpected word %s after %s: want e.g. %q", q(w), q(amount), lossExample)
		}
		amount = w
	}
	switch {
	case kind == "":
		return 0, Loss{}, fmt.Errorf("no distribution: start with uniform or exponential, e.g. %q", lossExample)
	case dirs == 0:
		return 0, Loss{}, errNoDirection
	case amount == "" && kind == LossUniform:
		return 0, Loss{}, fmt.Errorf("no loss percentage: want e.g. \"uniform egress 2%%\"")
	case amount == "":
		return 0, Loss{}, fmt.Errorf("no threshold: want e.g. \"exponential egress 300\" (0 to 1000)")
	}
	l := Loss{Kind: kind}
	var err error
	if kind == LossUniform {
		l.Percent, err = parsePercent(amount)
	} else {
		l.Threshold, err = parseThreshold(amount)
	}
	return dirs, l, err
}

func parsePercent(w string) (float64, error) {
	p, ok := parseNumber(strings.TrimSuffix(w, "%"))
	if !ok {
		return 0, fmt.Errorf("loss %s is not a percentage: want a number such as 2%% or 0.05%%", q(w))
	}
	if !(p > 0 && p <= 100) {
		return 0, fmt.Errorf("loss %s is out of range: want more than 0%% and at most 100%%", q(w))
	}
	return p, nil
}

func parseThreshold(w string) (uint32, error) {
	t, ok := parseNumber(w)
	if !ok {
		return 0, fmt.Errorf("threshold %s is not a number: want a whole number from 0 to %d (P(drop) = e^(-t/100))", q(w), MaxLossThreshold)
	}
	if !(t >= 0 && t <= MaxLossThreshold) {
		return 0, fmt.Errorf("threshold %s is out of range: want 0 to %d", q(w), MaxLossThreshold)
	}
	// Loss.Threshold is an integer; rounding silently would change the
	// probability the user asked for.
	if t != math.Trunc(t) {
		return 0, fmt.Errorf("threshold %s is not a whole number: want an integer from 0 to %d", q(w), MaxLossThreshold)
	}
	return uint32(t), nil
}

// Probability is the drop probability in [0,1]: Percent/100 for uniform
// loss, e^(-t/100) for the thesis's exponential threshold, computed exactly
// rather than from a lookup table. Unknown kinds never drop.
func (l Loss) Probability() float64 {
	var p float64
	switch l.Kind {
	case LossUniform:
		p = l.Percent / 100
	case LossExponential:
		p = math.Exp(-float64(l.Threshold) / 100)
	}
	if !(p > 0) { // also NaN
		return 0
	}
	return min(p, 1)
}

// Threshold32 is the datapath's comparison value: drop when
// uint64(bpf_get_prandom_u32()) < Threshold32(). It is round(p·2^32) in
// [0, 2^32]; 2^32 drops every packet, which is why it does not fit a u32.
func (l Loss) Threshold32() uint64 {
	const full = 1 << 32
	t := math.Round(l.Probability() * full)
	if t >= full {
		return full
	}
	return uint64(t)
}

// String renders the rule for humans: "uniform 2%" or
// "exponential 300 (p=4.979%)".
func (l Loss) String() string {
	switch l.Kind {
	case LossUniform:
		return "uniform " + formatPercent(l.Percent)
	case LossExponential:
		return fmt.Sprintf("exponential %d (p=%s%%)", l.Threshold, strconv.FormatFloat(100*l.Probability(), 'g', 4, 64))
	}
	return fmt.Sprintf("%q percent=%g threshold=%d", string(l.Kind), l.Percent, l.Threshold)
}

// formatPercent is the shortest plain decimal that parses back to p.
func formatPercent(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + "%" }

func (l Loss) clause(dir string) string {
	if l.Kind == LossExponential {
		return fmt.Sprintf("exponential %s %d", dir, l.Threshold)
	}
	return fmt.Sprintf("%s %s %s", l.Kind, dir, formatPercent(l.Percent))
}
