package rules

import (
	"fmt"
	"sort"
	"strings"
)

// ParseAnnotations reads every key kubeshaper understands from an object's
// annotations; other keys are ignored. A key whose value is invalid is left
// out as a whole and reported; the other keys still apply. Errors come
// sorted by key so that Events and logs are stable.
//
// The standard kubernetes.io/{egress,ingress}-bandwidth keys fill a
// direction only where kubeshaper.io/bandwidth (if valid) sets none.
func ParseAnnotations(ann map[string]string) (Policy, []*AnnotationError) {
	var (
		p    Policy
		errs []*AnnotationError
	)
	// Standard keys last: they only fill what the kubeshaper keys left.
	for _, key := range AnnotationKeys() {
		v, ok := ann[key]
		if !ok {
			continue
		}
		kp, err := parseValue(key, v)
		if err != nil {
			errs = append(errs, &AnnotationError{Key: key, Value: v, Err: err})
			continue
		}
		for _, d := range Directions {
			p[d].fillFrom(kp[d])
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Key < errs[j].Key })
	return p, errs
}

// ParseValue parses the value of one annotation key (a full key such as
// kubeshaper.io/bandwidth; see KeyForShortName for the CLI's short names).
// The error, if any, is an *AnnotationError.
func ParseValue(key, value string) (Policy, error) {
	p, err := parseValue(key, value)
	if err != nil {
		return Policy{}, &AnnotationError{Key: key, Value: value, Err: err}
	}
	return p, nil
}

func parseValue(key, value string) (Policy, error) {
	if k, ok := kindOfKey(key); ok {
		return k.parse(value)
	}
	if key == KeyEgressBandwidth || key == KeyIngressBandwidth {
		rate, err := parseQuantityRate(value)
		if err != nil {
			return Policy{}, err
		}
		d := Egress
		if key == KeyIngressBandwidth {
			d = Ingress
		}
		var p Policy
		p[d].Bandwidth = &Bandwidth{RateBitsPerSec: rate, Mode: ModeDrop}
		return p, nil
	}
	return Policy{}, fmt.Errorf("unknown key: want one of %s", strings.Join(AnnotationKeys(), ", "))
}
