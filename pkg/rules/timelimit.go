package rules

import (
	"fmt"
	"strings"
	"time"
)

// MaxDuration bounds kubeshaper.io/duration.
const MaxDuration = 366 * 24 * time.Hour

// TimeLimit ends the rules an object's annotations set: at Until, or
// Duration after they were first applied to a pod, whichever comes first.
// A zero field is no limit of that kind.
type TimeLimit struct {
	Until    time.Time
	Duration time.Duration
}

// IsZero reports whether there is no limit.
func (l TimeLimit) IsZero() bool { return l.Until.IsZero() && l.Duration == 0 }

// Deadline is when the rules end, given when they were first applied to
// the pod; the zero time is never.
func (l TimeLimit) Deadline(firstApplied time.Time) time.Time {
	var d time.Time
	if l.Duration > 0 {
		d = firstApplied.Add(l.Duration)
	}
	if !l.Until.IsZero() && (d.IsZero() || l.Until.Before(d)) {
		d = l.Until
	}
	return d
}

// String renders the limit as the annotations say it, e.g.
// "duration=5m0s until=2026-12-01T10:00:00Z", or "" for none.
func (l TimeLimit) String() string {
	var parts []string
	if l.Duration > 0 {
		parts = append(parts, "duration="+l.Duration.String())
	}
	if !l.Until.IsZero() {
		parts = append(parts, "until="+l.Until.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, " ")
}

// ParseTimeLimit reads kubeshaper.io/until (an RFC 3339 time, e.g.
// 2026-12-01T10:00:00Z) and kubeshaper.io/duration (a Go duration, e.g.
// 5m, from when the rules were first applied; more than 0, at most 366
// days). An invalid key is reported and ignored, as rule keys are.
func ParseTimeLimit(ann map[string]string) (TimeLimit, []*AnnotationError) {
	var (
		l    TimeLimit
		errs []*AnnotationError
	)
	if v, ok := ann[KeyDuration]; ok {
		d, err := parseLimitDuration(v)
		if err != nil {
			errs = append(errs, &AnnotationError{Key: KeyDuration, Value: v, Err: err})
		} else {
			l.Duration = d
		}
	}
	if v, ok := ann[KeyUntil]; ok {
		u, err := parseUntil(v)
		if err != nil {
			errs = append(errs, &AnnotationError{Key: KeyUntil, Value: v, Err: err})
		} else {
			l.Until = u
		}
	}
	return l, errs
}

func parseLimitDuration(v string) (time.Duration, error) {
	if err := checkValue(v); err != nil {
		return 0, err
	}
	s := strings.TrimFunc(v, isSpace)
	d, err := time.ParseDuration(strings.ToLower(s))
	if err != nil {
		return 0, fmt.Errorf("%s is not a duration: want e.g. 5m, 1h30m or 10s", q(s))
	}
	if d <= 0 || d > MaxDuration {
		return 0, fmt.Errorf("duration %s is out of range: want more than 0 and at most %s", q(s), MaxDuration)
	}
	return d, nil
}

func parseUntil(v string) (time.Time, error) {
	if err := checkValue(v); err != nil {
		return time.Time{}, err
	}
	s := strings.TrimFunc(v, isSpace)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s is not an RFC 3339 time: want e.g. 2026-12-01T10:00:00Z", q(s))
	}
	return t, nil
}
