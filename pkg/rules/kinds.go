package rules

import "slices"

// kind is one kind of rule. The kinds table below is the only list of
// them in this package: which annotation keys exist and parse how, the
// CLI's short names, String and Annotations, Equal, Clone and Merge,
// IsEmpty, targets. pkg/datapath maps each kind, by name, to its part of
// the map value (datapath/kinds.go: the kind's flags, how its rule is
// written, how it reads back). Adding a kind is a row here (with its type
// and grammar), a row there, the C, and tests.
type kind struct {
	name  string // short name: the CLI's, and String's label
	key   string // its kubeshaper.io annotation
	parse func(value string) (Policy, error)
	// rule is the direction's rule of this kind (its *T), or nil.
	rule  func(DirectionPolicy) any
	has   func(DirectionPolicy) bool
	equal func(a, b DirectionPolicy) bool
	// fill copies src's rule of this kind into dst, deeply, when dst has
	// none (merging: the first source to set a kind wins).
	fill func(dst *DirectionPolicy, src DirectionPolicy)
	// text is "name rule" for String, "" without a rule.
	text func(DirectionPolicy) string
	// render is the annotation value for both directions ("" for none).
	render func(Policy) string
	// target points at the rule's target; nil without a rule of this
	// kind, or for kinds that cannot be targeted.
	target func(*DirectionPolicy) *Target
}

// ruleKind builds a kind from its rule type T: the DirectionPolicy field
// holding it, its grammar, and how T is compared, copied and written.
func ruleKind[T any](name, key string, g grammar[T], field func(*DirectionPolicy) **T,
	eq func(T, T) bool, clone func(T) T, str func(T) string, clause func(T, string) string,
	target func(*T) *Target) kind {
	get := func(dp DirectionPolicy) *T { return *field(&dp) }
	return kind{
		name:  name,
		key:   key,
		parse: g.parse,
		rule: func(dp DirectionPolicy) any {
			if r := get(dp); r != nil {
				return r
			}
			return nil // not a typed nil in an interface
		},
		has:   func(dp DirectionPolicy) bool { return get(dp) != nil },
		equal: func(a, b DirectionPolicy) bool { return ptrEqual(get(a), get(b), eq) },
		fill: func(dst *DirectionPolicy, src DirectionPolicy) {
			if f, s := field(dst), get(src); *f == nil && s != nil {
				c := clone(*s)
				*f = &c
			}
		},
		text: func(dp DirectionPolicy) string {
			if r := get(dp); r != nil {
				return name + " " + str(*r)
			}
			return ""
		},
		render: func(p Policy) string { return renderKind(p, get, eq, clause) },
		target: func(dp *DirectionPolicy) *Target {
			if r := *field(dp); r != nil && target != nil {
				return target(r)
			}
			return nil
		},
	}
}

func same[T comparable](a, b T) bool { return a == b }
func copied[T any](v T) T            { return v }

// kinds, in the order String and Targets list them.
var kinds = []kind{
	ruleKind("bandwidth", KeyBandwidth, bandwidthGrammar,
		func(dp *DirectionPolicy) **Bandwidth { return &dp.Bandwidth },
		same[Bandwidth], copied[Bandwidth], Bandwidth.String, Bandwidth.clause,
		func(b *Bandwidth) *Target { return &b.Target }),
	ruleKind("loss", KeyLoss, lossGrammar,
		func(dp *DirectionPolicy) **Loss { return &dp.Loss },
		same[Loss], copied[Loss], Loss.String, Loss.clause,
		func(l *Loss) *Target { return &l.Target }),
	ruleKind("delay", KeyDelay, delayGrammar,
		func(dp *DirectionPolicy) **Delay { return &dp.Delay },
		same[Delay], copied[Delay], Delay.String, Delay.clause,
		func(d *Delay) *Target { return &d.Target }),
	ruleKind("program", KeyProgram, programGrammar,
		func(dp *DirectionPolicy) **Program { return &dp.Program },
		Program.Equal, func(p Program) Program { p.Params = slices.Clone(p.Params); return p },
		Program.String, Program.clause, nil),
	ruleKind("duplicate", KeyDuplicate, duplicateGrammar,
		func(dp *DirectionPolicy) **Duplicate { return &dp.Duplicate },
		same[Duplicate], copied[Duplicate], Duplicate.String, Duplicate.clause,
		func(d *Duplicate) *Target { return &d.Target }),
	ruleKind("corrupt", KeyCorrupt, corruptGrammar,
		func(dp *DirectionPolicy) **Corrupt { return &dp.Corrupt },
		same[Corrupt], copied[Corrupt], Corrupt.String, Corrupt.clause,
		func(c *Corrupt) *Target { return &c.Target }),
}

// kindOfKey returns the kind whose annotation key is key.
func kindOfKey(key string) (kind, bool) {
	for _, k := range kinds {
		if k.key == key {
			return k, true
		}
	}
	return kind{}, false
}

// Kind is a row of the table as other packages see it: pkg/datapath maps
// each kind to its part of the map value by Name.
type Kind struct{ k *kind }

// Kinds lists every kind, in the table's order (String's).
func Kinds() []Kind {
	out := make([]Kind, len(kinds))
	for i := range kinds {
		out[i] = Kind{&kinds[i]}
	}
	return out
}

// Name is the kind's short name ("bandwidth", "loss", …).
func (k Kind) Name() string { return k.k.name }

// Rule is dp's rule of this kind (a *Bandwidth, *Loss, …), or nil.
func (k Kind) Rule(dp DirectionPolicy) any { return k.k.rule(dp) }

// Target is the target of dp's rule of this kind: zero for a rule on
// every packet, without a rule, or for a kind that cannot be targeted.
func (k Kind) Target(dp DirectionPolicy) Target {
	if t := k.k.target(&dp); t != nil {
		return *t
	}
	return Target{}
}
