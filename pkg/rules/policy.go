package rules

import "slices"

// IsEmpty reports whether the direction has no rule at all.
func (dp DirectionPolicy) IsEmpty() bool {
	for _, k := range kinds {
		if k.has(dp) {
			return false
		}
	}
	return true
}

// IsEmpty reports whether neither direction has a rule.
func (p Policy) IsEmpty() bool { return p[Egress].IsEmpty() && p[Ingress].IsEmpty() }

// Equal compares rules by value, not by pointer. A nil and an empty Params
// slice are equal.
func (dp DirectionPolicy) Equal(o DirectionPolicy) bool {
	for _, k := range kinds {
		if !k.equal(dp, o) {
			return false
		}
	}
	return true
}

// Equal compares both directions by value.
func (p Policy) Equal(o Policy) bool {
	return p[Egress].Equal(o[Egress]) && p[Ingress].Equal(o[Ingress])
}

func ptrEqual[T any](a, b *T, eq func(T, T) bool) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return eq(*a, *b)
}

// Clone returns a deep copy: the result shares no pointer or slice with dp,
// so either can be changed without affecting the other.
func (dp DirectionPolicy) Clone() DirectionPolicy {
	var c DirectionPolicy
	c.fillFrom(dp)
	return c
}

// Clone returns a deep copy of both directions.
func (p Policy) Clone() Policy { return Policy{p[Egress].Clone(), p[Ingress].Clone()} }

// fillFrom copies (deeply) every kind of rule that src has and dp lacks.
func (dp *DirectionPolicy) fillFrom(src DirectionPolicy) {
	for _, k := range kinds {
		k.fill(dp, src)
	}
}

// Targets lists the targets of the direction's rules, each once, in the
// order of the kinds table (bandwidth, loss, delay, duplicate, corrupt);
// the zero target (every packet) is left out.
func (dp DirectionPolicy) Targets() []Target {
	var out []Target
	for _, k := range kinds {
		if t := k.target(&dp); t != nil && !t.IsZero() && !slices.Contains(out, *t) {
			out = append(out, *t)
		}
	}
	return out
}

// Services lists the Services the policy's targets name, each once.
func (p Policy) Services() []ServiceRef {
	var out []ServiceRef
	for _, d := range Directions {
		for _, t := range p[d].Targets() {
			if t.Service.Name != "" && !slices.Contains(out, t.Service) {
				out = append(out, t.Service)
			}
		}
	}
	return out
}

// WithServiceNamespace fills in ns as the namespace of every target's
// Service that names none (svc:name means the annotated object's own).
func (p Policy) WithServiceNamespace(ns string) Policy {
	out := p.Clone()
	for _, d := range Directions {
		for _, k := range kinds {
			if t := k.target(&out[d]); t != nil {
				*t = t.WithService(ns)
			}
		}
	}
	return out
}
