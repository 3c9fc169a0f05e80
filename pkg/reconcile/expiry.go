package reconcile

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// ReasonExpired is the Event posted when a time limit (kubeshaper.io/until,
// kubeshaper.io/duration) ends an object's rules on a pod.
const ReasonExpired = "Expired"

// RuleSet is the identity of a source's time-limited rules on a pod: the
// object and its rule annotations in canonical form, and the limit. A
// change to any of them is a new rule set, whose clock starts anew.
func (s Source) RuleSet() string {
	ann := s.Policy.Annotations()
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s/%s", s.Kind, s.Name, s.UID)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n%s=%s", k, ann[k])
	}
	fmt.Fprintf(&b, "\n%s", s.Limit)
	return b.String()
}

// Ended is a source whose rules a time limit ended.
type Ended struct {
	Source   Source
	Deadline time.Time
	// Announced is true once its end was reported (by this agent or an
	// earlier one).
	Announced bool
}

// RuleSetClock says when a source's rule set was first applied to the pod
// (recording now if it never was) and whether its end was announced.
type RuleSetClock func(s Source, now time.Time) (first time.Time, announced bool, err error)

// Effective is the pod's policy at now: the merge of the sources whose
// time is not up. It lists the sources that ended and returns the nearest
// deadline still ahead (zero: none), when the pod must be looked at again.
// Sources without rules or without a limit need no clock.
func (d Desired) Effective(now time.Time, clock RuleSetClock) (pol rules.Policy, ended []Ended, next time.Time, err error) {
	var inherited []rules.Policy
	var own rules.Policy
	for _, s := range d.Sources {
		active := s.Policy
		if !s.Limit.IsZero() && !s.Policy.IsEmpty() {
			first, announced, cerr := clock(s, now)
			if cerr != nil {
				return pol, nil, next, fmt.Errorf("time limit of the %s's rules: %w", strings.ToLower(s.Kind), cerr)
			}
			deadline := s.Limit.Deadline(first)
			if !deadline.After(now) {
				ended = append(ended, Ended{Source: s, Deadline: deadline, Announced: announced})
				active = rules.Policy{}
			} else if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
		}
		if s.Kind == "Pod" {
			own = active
		} else {
			inherited = append(inherited, active)
		}
	}
	return rules.Merge(inherited, own), ended, next, nil
}

// message is the Expired Event's text.
func (e Ended) message() string {
	whose := "the pod's own rules"
	if e.Source.Kind == "Service" {
		whose = "the rules of Service " + e.Source.Name
	}
	return fmt.Sprintf("%s (%s) ended at %s (%s): removed", whose, e.Source.Policy, e.Deadline.UTC().Format(time.RFC3339Nano), e.Source.Limit)
}
