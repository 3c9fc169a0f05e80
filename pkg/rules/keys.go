package rules

import (
	"slices"
	"strings"
)

// Annotation keys understood by ParseAnnotations.
const (
	// Prefix is the domain of kubeshaper's own annotations.
	Prefix = "kubeshaper.io/"

	KeyBandwidth = Prefix + "bandwidth"
	KeyLoss      = Prefix + "loss"
	KeyDelay     = Prefix + "delay"
	KeyProgram   = Prefix + "program"
	KeyDuplicate = Prefix + "duplicate"
	KeyCorrupt   = Prefix + "corrupt"

	// Time limits of the rules the object's annotations set (not rules
	// themselves: see ParseTimeLimit).
	KeyUntil    = Prefix + "until"
	KeyDuration = Prefix + "duration"

	// The ecosystem's standard bandwidth annotations (CNI bandwidth plugin).
	KeyEgressBandwidth  = "kubernetes.io/egress-bandwidth"
	KeyIngressBandwidth = "kubernetes.io/ingress-bandwidth"
)

// AnnotationKeys returns every key ParseAnnotations reads, in the order it
// reads them: the kinds' keys, then the standard keys, which only fill what
// kubeshaper.io/bandwidth left. A fresh slice each call, so callers may
// keep or modify it.
func AnnotationKeys() []string {
	out := make([]string, 0, len(kinds)+2)
	for _, k := range kinds {
		out = append(out, k.key)
	}
	return append(out, KeyEgressBandwidth, KeyIngressBandwidth)
}

// KeyForShortName maps the CLI's short names (the kinds' names: bandwidth,
// loss, delay, program, duplicate, corrupt; case-insensitive) to the full
// kubeshaper.io annotation key.
func KeyForShortName(short string) (string, bool) {
	short = strings.ToLower(strings.TrimSpace(short))
	for _, k := range kinds {
		if k.name == short {
			return k.key, true
		}
	}
	return "", false
}

// ShortNames lists the kinds' short names, for usage texts.
func ShortNames() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.name
	}
	return out
}

// IsOwnKey reports whether an annotation key is one kubeshaper reads or
// reserves: the kubeshaper.io domain and the standard bandwidth keys.
func IsOwnKey(key string) bool {
	return strings.HasPrefix(key, Prefix) || key == KeyEgressBandwidth || key == KeyIngressBandwidth
}

func isKnownKey(key string) bool { return slices.Contains(AnnotationKeys(), key) }
