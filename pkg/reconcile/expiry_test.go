package reconcile

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TestEffectiveEndsEachObjectsRules: a time limit ends the rules of the
// object it is on, not the others'; the next deadline is the nearest one
// still ahead; a changed rule set is a new clock.
func TestEffectiveEndsEachObjectsRules(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: "u1", Annotations: map[string]string{
		"kubeshaper.io/bandwidth": "10mbit egress",
		"kubeshaper.io/duration":  "10s",
	}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "n", UID: "u2", Annotations: map[string]string{
		"kubeshaper.io/loss":  "uniform egress 1%",
		"kubeshaper.io/until": "2026-12-01T10:00:00Z",
	}}}
	d := DesiredFor(pod, []*corev1.Service{svc})
	t0 := time.Date(2026, 12, 1, 9, 59, 0, 0, time.UTC)
	firsts := map[string]time.Time{}
	clock := func(s Source, now time.Time) (time.Time, bool, error) {
		k := s.RuleSet()
		if _, ok := firsts[k]; !ok {
			firsts[k] = now
		}
		return firsts[k], false, nil
	}
	pol, ended, next, err := d.Effective(t0, clock)
	if err != nil || len(ended) != 0 || pol[rules.Egress].Bandwidth == nil || pol[rules.Egress].Loss == nil || !next.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("at t0: %v ended=%v next=%v err=%v", pol, ended, next, err)
	}
	pol, ended, next, _ = d.Effective(t0.Add(10*time.Second), clock)
	if len(ended) != 1 || ended[0].Source.Kind != "Pod" || pol[rules.Egress].Bandwidth != nil || pol[rules.Egress].Loss == nil {
		t.Fatalf("at t0+10s: %v ended=%+v", pol, ended)
	}
	if want := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Fatalf("next %v, want the Service's until %v", next, want)
	}
	pol, ended, next, _ = d.Effective(t0.Add(time.Hour), clock)
	if len(ended) != 2 || !pol.IsEmpty() || !next.IsZero() {
		t.Fatalf("an hour later: %v ended=%d next=%v", pol, len(ended), next)
	}
	// The pod's rule changes: a new rule set, a new 10 s.
	pod.Annotations["kubeshaper.io/bandwidth"] = "20mbit egress"
	pol, _, next, _ = DesiredFor(pod, nil).Effective(t0.Add(time.Hour), clock)
	if pol[rules.Egress].Bandwidth == nil || !next.Equal(t0.Add(time.Hour+10*time.Second)) {
		t.Fatalf("changed rule: %v next %v", pol, next)
	}
	// Invalid limits are reported with the other annotation errors.
	pod.Annotations["kubeshaper.io/duration"] = "forever"
	if d := DesiredFor(pod, nil); len(d.PodErrors) != 1 || d.PodErrors[0].Key != "kubeshaper.io/duration" {
		t.Fatalf("errors %v", d.PodErrors)
	}
}
