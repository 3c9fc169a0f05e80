package rules

import "slices"

// IsEmpty reports whether the direction has no rule at all.
func (dp DirectionPolicy) IsEmpty() bool {
	return dp.Bandwidth == nil && dp.Loss == nil && dp.Delay == nil && dp.Program == nil &&
		dp.Duplicate == nil && dp.Corrupt == nil
}

// IsEmpty reports whether neither direction has a rule.
func (p Policy) IsEmpty() bool { return p[Egress].IsEmpty() && p[Ingress].IsEmpty() }

// Equal compares rules by value, not by pointer. A nil and an empty Params
// slice are equal.
func (dp DirectionPolicy) Equal(o DirectionPolicy) bool {
	return ptrEqual(dp.Bandwidth, o.Bandwidth, func(a, b Bandwidth) bool { return a == b }) &&
		ptrEqual(dp.Loss, o.Loss, func(a, b Loss) bool { return a == b }) &&
		ptrEqual(dp.Delay, o.Delay, func(a, b Delay) bool { return a == b }) &&
		ptrEqual(dp.Program, o.Program, Program.Equal) &&
		ptrEqual(dp.Duplicate, o.Duplicate, func(a, b Duplicate) bool { return a == b }) &&
		ptrEqual(dp.Corrupt, o.Corrupt, func(a, b Corrupt) bool { return a == b })
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
	if dp.Bandwidth == nil && src.Bandwidth != nil {
		b := *src.Bandwidth
		dp.Bandwidth = &b
	}
	if dp.Loss == nil && src.Loss != nil {
		l := *src.Loss
		dp.Loss = &l
	}
	if dp.Delay == nil && src.Delay != nil {
		d := *src.Delay
		dp.Delay = &d
	}
	if dp.Program == nil && src.Program != nil {
		pr := *src.Program
		pr.Params = slices.Clone(pr.Params)
		dp.Program = &pr
	}
	if dp.Duplicate == nil && src.Duplicate != nil {
		d := *src.Duplicate
		dp.Duplicate = &d
	}
	if dp.Corrupt == nil && src.Corrupt != nil {
		c := *src.Corrupt
		dp.Corrupt = &c
	}
}

// Targets lists the targets of the direction's rules, each once, in the
// order bandwidth, loss, delay, duplicate, corrupt; the zero target (every
// packet) is left out.
func (dp DirectionPolicy) Targets() []Target {
	var out []Target
	add := func(t Target) {
		if t.IsZero() || slices.Contains(out, t) {
			return
		}
		out = append(out, t)
	}
	if dp.Bandwidth != nil {
		add(dp.Bandwidth.Target)
	}
	if dp.Loss != nil {
		add(dp.Loss.Target)
	}
	if dp.Delay != nil {
		add(dp.Delay.Target)
	}
	if dp.Duplicate != nil {
		add(dp.Duplicate.Target)
	}
	if dp.Corrupt != nil {
		add(dp.Corrupt.Target)
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
		dp := &out[d]
		if dp.Bandwidth != nil {
			dp.Bandwidth.Target = dp.Bandwidth.Target.WithService(ns)
		}
		if dp.Loss != nil {
			dp.Loss.Target = dp.Loss.Target.WithService(ns)
		}
		if dp.Delay != nil {
			dp.Delay.Target = dp.Delay.Target.WithService(ns)
		}
		if dp.Duplicate != nil {
			dp.Duplicate.Target = dp.Duplicate.Target.WithService(ns)
		}
		if dp.Corrupt != nil {
			dp.Corrupt.Target = dp.Corrupt.Target.WithService(ns)
		}
	}
	return out
}
