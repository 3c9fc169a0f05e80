package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Limits of the program grammar. The name becomes a file name in the
// admin's program directory, so it cannot hold dots or slashes: no path
// traversal, no hidden files.
const (
	MaxProgramParams = 32
	MaxParamValueLen = 256
)

var (
	programNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	// Params set C globals, so their names are C identifiers.
	paramNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
)

// programExample is a valid value, quoted by errors to show the syntax.
const programExample = "dropper egress DROP=1 PORT=80"

var programGrammar = grammar[Program]{
	example: programExample,
	clause:  parseProgramClause,
	set: func(dp *DirectionPolicy, p Program) {
		// "both" must not leave two directions sharing one slice.
		p.Params = slices.Clone(p.Params)
		dp.Program = &p
	},
}

// parseProgramClause reads "NAME DIR [PARAM=VALUE ...]". Parameter names
// and the program name are case-sensitive; only the direction is a keyword.
func parseProgramClause(words []string) (dirSet, Program, error) {
	var (
		dirs dirSet
		p    Program
	)
	for _, w := range words {
		if isDir, err := addDirection(&dirs, w); err != nil {
			return 0, p, err
		} else if isDir {
			continue
		}
		if name, val, ok := strings.Cut(w, "="); ok {
			if err := checkParam(p.Params, name, val); err != nil {
				return 0, p, err
			}
			p.Params = append(p.Params, Param{Name: name, Value: val})
			continue
		}
		if p.Name != "" {
			return 0, p, fmt.Errorf("second program name %s after %s: one program per direction", q(w), q(p.Name))
		}
		if !programNameRE.MatchString(w) {
			return 0, p, fmt.Errorf("program name %s is invalid: want 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit (no dots or slashes)", q(w))
		}
		p.Name = w
	}
	if p.Name == "" {
		return 0, p, fmt.Errorf("no program name: want e.g. %q", programExample)
	}
	if dirs == 0 {
		return 0, p, errNoDirection
	}
	return dirs, p, nil
}

func checkParam(seen []Param, name, val string) error {
	if !paramNameRE.MatchString(name) {
		return fmt.Errorf("parameter name %s is invalid: want a C identifier (letters, digits, '_', not starting with a digit) of at most 64 characters", q(name))
	}
	if len(seen) == MaxProgramParams {
		return fmt.Errorf("too many parameters: at most %d", MaxProgramParams)
	}
	for _, s := range seen {
		if s.Name == name {
			return fmt.Errorf("parameter %s is given twice", q(name))
		}
	}
	if val == "" {
		return fmt.Errorf("parameter %s has no value", q(name))
	}
	if len(val) > MaxParamValueLen {
		return fmt.Errorf("value of parameter %s is %d bytes: at most %d", q(name), len(val), MaxParamValueLen)
	}
	// '=' is refused so that NAME=VALUE always splits one way and a
	// rendered rule reads back the same.
	for _, r := range val {
		if r <= ' ' || r > '~' || r == '=' || r == ';' {
			return fmt.Errorf("value of parameter %s holds %q: want printable ASCII without spaces, '=' or ';'", q(name), r)
		}
	}
	return nil
}

// String renders the rule for humans: "dropper DROP=1 PORT=80".
func (p Program) String() string {
	var b strings.Builder
	b.WriteString(p.Name)
	for _, pr := range p.Params {
		b.WriteString(" " + pr.Name + "=" + pr.Value)
	}
	return b.String()
}

func (p Program) clause(dir string) string {
	s := p.Name + " " + dir
	for _, pr := range p.Params {
		s += " " + pr.Name + "=" + pr.Value
	}
	return s
}

// Equal reports whether both name the same program with the same params in
// the same order (order may matter to whoever sets the globals).
func (p Program) Equal(o Program) bool {
	return p.Name == o.Name && slices.Equal(p.Params, o.Params)
}
