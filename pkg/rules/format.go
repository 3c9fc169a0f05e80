package rules

import "strings"

// String renders the policy in a canonical human form for Events and the
// CLI, one group per direction that has rules:
//
//	egress: bandwidth 10mbit burst=auto mode=drop; loss uniform 2% | ingress: delay 80ms jitter=10ms
//
// and "none" for an empty policy. Use Annotations for text that parses back.
func (p Policy) String() string {
	var parts []string
	for _, d := range Directions {
		if !p[d].IsEmpty() {
			parts = append(parts, d.String()+": "+p[d].String())
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " | ")
}

// String renders one direction's rules in the order of the kinds table
// (bandwidth, loss, delay, program, duplicate, corrupt), e.g. "bandwidth
// 10mbit burst=auto mode=drop; loss uniform 2%", or "none".
func (dp DirectionPolicy) String() string {
	var parts []string
	for _, k := range kinds {
		if t := k.text(dp); t != "" {
			parts = append(parts, t)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// Annotations renders the policy as kubeshaper.io annotations in canonical
// form (defaults left out, "both" when the two directions agree). For any
// policy that ParseAnnotations or ParseValue produced, parsing the result
// gives back an Equal policy; bandwidth from the standard kubernetes.io keys
// comes back under kubeshaper.io/bandwidth.
func (p Policy) Annotations() map[string]string {
	out := map[string]string{}
	for _, k := range kinds {
		if v := k.render(p); v != "" {
			out[k.key] = v
		}
	}
	return out
}

// renderKind writes one key's value: a single "both" clause when the two
// directions hold the same rule, else one clause per direction set.
func renderKind[T any](p Policy, get func(DirectionPolicy) *T, eq func(T, T) bool, clause func(T, string) string) string {
	e, i := get(p[Egress]), get(p[Ingress])
	if e != nil && i != nil && eq(*e, *i) {
		return clause(*e, "both")
	}
	var parts []string
	if e != nil {
		parts = append(parts, clause(*e, Egress.String()))
	}
	if i != nil {
		parts = append(parts, clause(*i, Ingress.String()))
	}
	return strings.Join(parts, "; ")
}
