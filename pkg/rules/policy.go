package rules

import "slices"

// IsEmpty reports whether the direction has no rule at all.
func (dp DirectionPolicy) IsEmpty() bool {
	return dp.Bandwidth == nil && dp.Loss == nil && dp.Delay == nil && dp.Program == nil
}

// IsEmpty reports whether neither direction has a rule.
func (p Policy) IsEmpty() bool { return p[Egress].IsEmpty() && p[Ingress].IsEmpty() }

// Equal compares rules by value, not by pointer. A nil and an empty Params
// slice are equal.
func (dp DirectionPolicy) Equal(o DirectionPolicy) bool {
	return ptrEqual(dp.Bandwidth, o.Bandwidth, func(a, b Bandwidth) bool { return a == b }) &&
		ptrEqual(dp.Loss, o.Loss, func(a, b Loss) bool { return a == b }) &&
		ptrEqual(dp.Delay, o.Delay, func(a, b Delay) bool { return a == b }) &&
		ptrEqual(dp.Program, o.Program, Program.Equal)
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
}
