package rules

import "strings"

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
// reads them. A fresh slice each call, so callers may keep or modify it.
func AnnotationKeys() []string {
	return []string{KeyBandwidth, KeyDelay, KeyLoss, KeyProgram, KeyEgressBandwidth, KeyIngressBandwidth, KeyDuplicate, KeyCorrupt}
}

// KeyForShortName maps the CLI's short names (bandwidth, loss, delay,
// program, duplicate, corrupt; case-insensitive) to the full kubeshaper.io annotation key.
func KeyForShortName(short string) (string, bool) {
	switch strings.ToLower(strings.TrimSpace(short)) {
	case "bandwidth":
		return KeyBandwidth, true
	case "loss":
		return KeyLoss, true
	case "delay":
		return KeyDelay, true
	case "program":
		return KeyProgram, true
	case "duplicate":
		return KeyDuplicate, true
	case "corrupt":
		return KeyCorrupt, true
	}
	return "", false
}

func isKnownKey(key string) bool {
	for _, k := range AnnotationKeys() {
		if k == key {
			return true
		}
	}
	return false
}
