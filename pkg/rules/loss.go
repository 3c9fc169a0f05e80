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

// gilbertExample shows the Gilbert-Elliott syntax.
const gilbertExample = "gilbert egress p=1% r=25% h=0% k=100%"

var lossGrammar = grammar[Loss]{
	example:   lossExample,
	joinUnits: true,
	clause:    parseLossClause,
	set:       func(dp *DirectionPolicy, l Loss) { dp.Loss = &l },
}

// parseLossClause reads "uniform DIR PERCENT", "exponential DIR T" or
// "gilbert DIR p=P [r=R] [h=H] [k=K]", each with optional target options;
// the words may come in any order.
func parseLossClause(words []string) (dirSet, Loss, error) {
	var (
		dirs   dirSet
		kind   LossKind
		amount string
		tb     targetBuilder
		ge     = map[string]string{}
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, Loss{}, err
		} else if isDir {
			continue
		}
		name, val, isOpt, err := option(w)
		if err != nil {
			return 0, Loss{}, err
		}
		if isOpt {
			if ok, err := tb.handle(name, val); ok {
				if err != nil {
					return 0, Loss{}, err
				}
				continue
			}
			switch name {
			case "p", "r", "h", "k":
				if _, dup := ge[name]; dup {
					return 0, Loss{}, fmt.Errorf("%s= given twice", name)
				}
				ge[name] = val
				continue
			}
			return 0, Loss{}, fmt.Errorf("unknown option %s: loss takes to=, port= and proto=, and gilbert p=, r=, h= and k=", q(name+"="))
		}
		if k := LossKind(strings.ToLower(w)); k == LossUniform || k == LossExponential || k == LossGilbert {
			if kind != "" {
				return 0, Loss{}, fmt.Errorf("second distribution %s: a clause is uniform, exponential or gilbert", q(w))
			}
			kind = k
			continue
		}
		if _, _, isNum := splitNumber(w); !isNum && kind == "" {
			return 0, Loss{}, fmt.Errorf("unknown distribution %s: want uniform, exponential or gilbert", q(w))
		}
		if amount != "" {
			return 0, Loss{}, fmt.Errorf("unexpected word %s after %s: want e.g. %q", q(w), q(amount), lossExample)
		}
		amount = w
	}
	switch {
	case kind == "":
		return 0, Loss{}, fmt.Errorf("no distribution: start with uniform, exponential or gilbert, e.g. %q", lossExample)
	case dirs == 0:
		return 0, Loss{}, errNoDirection
	case kind == LossGilbert && amount != "":
		return 0, Loss{}, fmt.Errorf("unexpected word %s: gilbert takes p=, r=, h= and k=, e.g. %q", q(amount), gilbertExample)
	case kind != LossGilbert && len(ge) > 0:
		return 0, Loss{}, fmt.Errorf("p=, r=, h= and k= are gilbert's parameters, not %s's", kind)
	case amount == "" && kind == LossUniform:
		return 0, Loss{}, fmt.Errorf("no loss percentage: want e.g. \"uniform egress 2%%\"")
	case amount == "" && kind == LossExponential:
		return 0, Loss{}, fmt.Errorf("no threshold: want e.g. \"exponential egress 300\" (0 to 1000)")
	}
	l := Loss{Kind: kind}
	var err error
	switch kind {
	case LossUniform:
		l.Percent, err = parsePercent("loss", amount)
	case LossExponential:
		l.Threshold, err = parseThreshold(amount)
	case LossGilbert:
		l.Gilbert, err = parseGilbert(ge)
	}
	if err != nil {
		return 0, Loss{}, err
	}
	if l.Target, err = tb.finish(); err != nil {
		return 0, Loss{}, err
	}
	return dirs, l, nil
}

// parseGilbert reads p (required), r, h and k with netem's defaults: r =
// 100% - p, h = 0% (the bad state loses everything), k = 100% (the good
// state loses nothing).
func parseGilbert(ge map[string]string) (Gilbert, error) {
	pv, ok := ge["p"]
	if !ok {
		return Gilbert{}, fmt.Errorf("gilbert needs p= (the probability of going from good to bad): want e.g. %q", gilbertExample)
	}
	var g Gilbert
	var err error
	if g.P, err = parseProb("p", pv); err != nil {
		return g, err
	}
	if g.P == 0 {
		return g, fmt.Errorf("p=0%% never enters the bad state: want more than 0%%")
	}
	g.R, g.H, g.K = 100-g.P, 0, 100
	for _, o := range []struct {
		name string
		dst  *float64
	}{{"r", &g.R}, {"h", &g.H}, {"k", &g.K}} {
		if v, ok := ge[o.name]; ok {
			if *o.dst, err = parseProb(o.name, v); err != nil {
				return g, err
			}
		}
	}
	return g, nil
}

// parseProb reads a percentage in [0,100] ("%" optional).
func parseProb(name, w string) (float64, error) {
	p, ok := parseNumber(strings.TrimSuffix(w, "%"))
	if !ok {
		return 0, fmt.Errorf("%s=%s is not a percentage: want a number such as 25%% or 0.5%%", name, q(w))
	}
	if !(p >= 0 && p <= 100) {
		return 0, fmt.Errorf("%s=%s is out of range: want 0%% to 100%%", name, q(w))
	}
	return p, nil
}

func parsePercent(what, w string) (float64, error) {
	p, ok := parseNumber(strings.TrimSuffix(w, "%"))
	if !ok {
		return 0, fmt.Errorf("%s %s is not a percentage: want a number such as 2%% or 0.05%%", what, q(w))
	}
	if !(p > 0 && p <= 100) {
		return 0, fmt.Errorf("%s %s is out of range: want more than 0%% and at most 100%%", what, q(w))
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
// loss, e^(-t/100) for the exponential threshold (the ELTE prototype's loss model), computed exactly
// rather than from a lookup table, and the long-run loss rate of a
// Gilbert-Elliott model. Unknown kinds never drop.
func (l Loss) Probability() float64 {
	var p float64
	switch l.Kind {
	case LossUniform:
		p = l.Percent / 100
	case LossExponential:
		p = math.Exp(-float64(l.Threshold) / 100)
	case LossGilbert:
		p = l.Gilbert.LossRate()
	}
	if !(p > 0) { // also NaN
		return 0
	}
	return min(p, 1)
}

// Threshold32 is the datapath's comparison value: drop when
// uint64(bpf_get_prandom_u32()) < Threshold32(). It is round(p·2^32) in
// [0, 2^32]; 2^32 drops every packet, which is why it does not fit a u32.
func (l Loss) Threshold32() uint64 { return Threshold32(l.Probability()) }

// Threshold32 turns a probability into the datapath's comparison value:
// an event happens when uint64(bpf_get_prandom_u32()) < Threshold32(p).
// It is round(p·2^32) in [0, 2^32]; 2^32 is "always", which is why it does
// not fit a u32.
func Threshold32(p float64) uint64 {
	const full = 1 << 32
	if !(p > 0) {
		return 0
	}
	t := math.Round(p * full)
	if t >= full {
		return full
	}
	return uint64(t)
}

// BadShare is the long-run share of packets that find the bad state:
// p/(p+r) (0 when the model never leaves the good state).
func (g Gilbert) BadShare() float64 {
	if g.P+g.R == 0 {
		return 0
	}
	return g.P / (g.P + g.R)
}

// LossRate is the model's long-run loss rate:
// P(good)·(1−k) + P(bad)·(1−h).
func (g Gilbert) LossRate() float64 {
	bad := g.BadShare()
	return (1-bad)*(1-g.K/100) + bad*(1-g.H/100)
}

func (g Gilbert) String() string {
	return fmt.Sprintf("p=%s r=%s h=%s k=%s", formatPercent(g.P), formatPercent(g.R), formatPercent(g.H), formatPercent(g.K))
}

// String renders the rule for humans: "uniform 2%" or
// "exponential 300 (p=4.979%)".
func (l Loss) String() string {
	switch l.Kind {
	case LossUniform:
		return "uniform " + formatPercent(l.Percent) + l.Target.String()
	case LossExponential:
		return fmt.Sprintf("exponential %d (p=%s%%)%s", l.Threshold, strconv.FormatFloat(100*l.Probability(), 'g', 4, 64), l.Target)
	case LossGilbert:
		return "gilbert " + l.Gilbert.String() + l.Target.String()
	}
	return fmt.Sprintf("%q percent=%g threshold=%d", string(l.Kind), l.Percent, l.Threshold)
}

// formatPercent is the shortest plain decimal that parses back to p.
func formatPercent(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + "%" }

func (l Loss) clause(dir string) string {
	switch l.Kind {
	case LossExponential:
		return fmt.Sprintf("exponential %s %d%s", dir, l.Threshold, l.Target)
	case LossGilbert:
		return fmt.Sprintf("gilbert %s %s%s", dir, l.Gilbert, l.Target)
	}
	return fmt.Sprintf("%s %s %s%s", l.Kind, dir, formatPercent(l.Percent), l.Target)
}
