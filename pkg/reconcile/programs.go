package reconcile

import (
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// programWant is the filter name each direction's custom program has as
// its file and parameters are now; "" for none, "error: …" when the file
// cannot be read (so that its appearing later is a change).
func (r *Reconciler) programWant(pol rules.Policy) [2]string {
	var out [2]string
	for _, d := range rules.Directions {
		p := pol[d].Program
		if p == nil {
			continue
		}
		name, err := r.node.ProgramName(*p, d)
		if err != nil {
			out[d] = "error: " + err.Error()
			continue
		}
		out[d] = name
	}
	return out
}

// programsIntact reports whether the custom programs applied are still
// what the policy asks for: same file content and parameters (a changed
// ConfigMap reloads), and attached where they loaded. A program that
// failed to load is not retried until its file or parameters change.
func (r *Reconciler) programsIntact(st *podState, want rules.Policy) bool {
	if want[rules.Egress].Program == nil && want[rules.Ingress].Program == nil && st.progs == [2]string{} {
		return true
	}
	if r.programWant(want) != st.progs {
		return false
	}
	return r.node.ProgramsIntact(st.ifc, st.progUp)
}

// applyPrograms runs the shaper's program step for the pod and reports
// what failed in one ApplyFailed Event, saying that the other rules apply.
func (r *Reconciler) applyPrograms(pod *corev1.Pod, ps *podState, want rules.Policy) {
	if want[rules.Egress].Program == nil && want[rules.Ingress].Program == nil {
		// Nothing asked: only a program this agent (or an earlier one)
		// put there needs removing, which the shaper's step does.
		if !r.hadPrograms(ps.ifc) {
			return
		}
	}
	st := r.node.ApplyPrograms(ps.ifc, want)
	var msgs []string
	for _, d := range rules.Directions {
		ps.progs[d] = st[d].Filter
		if st[d].Err == nil {
			ps.progUp[d] = st[d].Filter
			continue
		}
		if ps.progs[d] == "" {
			ps.progs[d] = "error: " + st[d].Err.Error()
		}
		msgs = append(msgs, st[d].Err.Error())
	}
	if len(msgs) > 0 {
		r.warnOnce(pod, ReasonApplyFailed, strings.Join(msgs, "; ")+"; the pod's other rules are applied (the program is tried again when its file or parameters change)")
	}
}

// hadPrograms reports whether any pod state this process applied to the
// interface had a custom program, or the interface has a program filter.
func (r *Reconciler) hadPrograms(ifc shaper.Interface) bool {
	r.mu.Lock()
	for _, st := range r.applied {
		if st.ifc.Index == ifc.Index && st.progUp != [2]string{} {
			r.mu.Unlock()
			return true
		}
	}
	r.mu.Unlock()
	// After a restart nothing is known: the filters and links say.
	return r.node.HasPrograms(ifc)
}

// effective computes the pod's policy at this moment: sources whose time
// limit is up are left out; the pod is looked at again at the next
// deadline. The first application of each time-limited rule set is
// recorded in a pinned map, so a restarted agent keeps the clock.
func (r *Reconciler) effective(key string, pod *corev1.Pod, want Desired) (rules.Policy, []Ended, error) {
	now := time.Now()
	pol, ended, next, err := want.Effective(now, func(s Source, now time.Time) (time.Time, bool, error) {
		return r.node.RuleSetClock(string(pod.UID), s.RuleSet(), now)
	})
	if err != nil {
		return pol, nil, err
	}
	if !next.IsZero() {
		r.w.Queue.AddAfter(key, next.Sub(now))
	}
	return pol, ended, nil
}

// announce posts an Expired Event for each source whose end was not yet
// reported, once its rules are gone from the datapath.
func (r *Reconciler) announce(pod *corev1.Pod, ended []Ended) {
	for _, e := range ended {
		if e.Announced {
			continue
		}
		msg := e.message()
		r.events.Event(pod, corev1.EventTypeNormal, ReasonExpired, msg)
		r.log.WithFields(logrus.Fields{"pod": pod.Namespace + "/" + pod.Name, "late": time.Since(e.Deadline)}).Info(msg)
		if err := r.node.AnnounceRuleSet(string(pod.UID), e.Source.RuleSet()); err != nil {
			r.log.WithError(err).Warn(fmt.Sprintf("recording that %s/%s's time limit was announced", pod.Namespace, pod.Name))
		}
	}
}
