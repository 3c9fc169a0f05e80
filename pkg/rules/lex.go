package rules

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxValueLen is the longest annotation value parsed at all. Real values are
// a few dozen bytes; the cap keeps parsing and error reporting cheap for
// whatever someone pastes into an annotation.
const MaxValueLen = 4096

// checkValue rejects values that are too long or carry bytes that have no
// business in a rule: they would be invisible in kubectl output and could
// garble the Event that reports them.
func checkValue(v string) error {
	if len(v) > MaxValueLen {
		return fmt.Errorf("value is %d bytes, longer than the %d-byte limit", len(v), MaxValueLen)
	}
	for i, r := range v {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(v[i:]); size == 1 {
				return fmt.Errorf("invalid UTF-8 at byte %d", i)
			}
		}
		if isSpace(r) {
			continue
		}
		if !unicode.IsPrint(r) {
			return fmt.Errorf("non-printable character %U at byte %d: only printable text, spaces, tabs and newlines are allowed", r, i)
		}
	}
	return nil
}

// isSpace is the whitespace of the grammar. Newlines are allowed so that a
// YAML block scalar can put one clause per line.
func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// tokenize splits one clause into words. Spaces around "=" are dropped
// ("burst = 64kb" is "burst=64kb"). With joinUnits, a number followed by a
// word made only of letters or "%" becomes one word, which is what accepts
// the spaced form of the ELTE prototype this grammar extends ("10 mbps egress") and "2 %"; reserved words are never
// glued, so "10 egress" still reports a missing unit.
func tokenize(clause string, joinUnits bool) []string {
	fields := strings.FieldsFunc(clause, isSpace)
	words := make([]string, 0, len(fields))
	for i := 0; i < len(fields); i++ {
		w := fields[i]
		for i+1 < len(fields) {
			next := fields[i+1]
			if strings.HasSuffix(w, "=") || strings.HasPrefix(next, "=") ||
				(joinUnits && endsInNumber(w) && isUnitWord(next)) {
				w += next
				i++
				continue
			}
			break
		}
		words = append(words, w)
	}
	return words
}

func endsInNumber(w string) bool {
	c := w[len(w)-1]
	return c >= '0' && c <= '9' || c == '.'
}

func isUnitWord(w string) bool {
	if isReserved(w) {
		return false
	}
	for _, r := range w {
		if !unicode.IsLetter(r) && r != '%' {
			return false
		}
	}
	return true
}

func isReserved(w string) bool {
	if _, ok := parseDirectionWord(w); ok {
		return true
	}
	switch LossKind(strings.ToLower(w)) {
	case LossUniform, LossExponential, LossGilbert:
		return true
	}
	return false
}

// dirSet is a set of directions, one bit per Direction.
type dirSet uint8

const (
	dirEgress  dirSet = 1 << Egress
	dirIngress dirSet = 1 << Ingress
	dirBoth           = dirEgress | dirIngress
)

func (s dirSet) has(d Direction) bool { return s&(1<<d) != 0 }

func parseDirectionWord(w string) (dirSet, bool) {
	switch strings.ToLower(w) {
	case "egress":
		return dirEgress, true
	case "ingress":
		return dirIngress, true
	case "both":
		return dirBoth, true
	}
	return 0, false
}

var errNoDirection = errors.New("no direction: add egress (traffic the pod sends), ingress (traffic it receives) or both")

// addDirection records the direction word w in *dirs; a clause names one.
func addDirection(dirs *dirSet, w string) (bool, error) {
	d, ok := parseDirectionWord(w)
	if !ok {
		return false, nil
	}
	if *dirs != 0 {
		return true, fmt.Errorf("second direction %s in one clause: use both, or separate clauses with \";\"", q(w))
	}
	*dirs = d
	return true, nil
}

// option splits a "name=value" word. The name comes back lower-cased
// because option names are keywords.
func option(w string) (name, value string, ok bool, err error) {
	name, value, ok = strings.Cut(w, "=")
	if !ok {
		return "", "", false, nil
	}
	if name == "" {
		return "", "", true, fmt.Errorf("%s has no option name before \"=\"", q(w))
	}
	if value == "" {
		return "", "", true, fmt.Errorf("option %s has no value", q(name+"="))
	}
	return strings.ToLower(name), value, true, nil
}

// grammar describes one kubeshaper.io key: how a clause becomes a rule of
// type T and where that rule goes in a DirectionPolicy.
type grammar[T any] struct {
	example   string
	joinUnits bool
	clause    func(words []string) (dirSet, T, error)
	set       func(dp *DirectionPolicy, rule T)
}

// parse turns a whole value into a Policy, or fails as a whole: a value is
// applied completely or not at all.
func (g grammar[T]) parse(value string) (Policy, error) {
	if err := checkValue(value); err != nil {
		return Policy{}, err
	}
	parts := strings.Split(value, ";")
	var p Policy
	var setBy [2]int // clause number (1-based) that set each direction
	clauses := 0
	for i, part := range parts {
		words := tokenize(part, g.joinUnits)
		if len(words) == 0 {
			continue // tolerate "a; b;" and blank lines
		}
		clauses++
		dirs, rule, err := g.clause(words)
		if err != nil {
			if len(parts) > 1 {
				return Policy{}, fmt.Errorf("clause %d %s: %w", i+1, q(strings.TrimFunc(part, isSpace)), err)
			}
			return Policy{}, err
		}
		for _, d := range Directions {
			if !dirs.has(d) {
				continue
			}
			if setBy[d] != 0 {
				return Policy{}, fmt.Errorf("clause %d sets %s again (clause %d already did): give each direction once", i+1, d, setBy[d])
			}
			setBy[d] = i + 1
			g.set(&p[d], rule)
		}
	}
	if clauses == 0 {
		return Policy{}, fmt.Errorf("empty value: want e.g. %q", g.example)
	}
	return p, nil
}
