package nodestatus

import (
	"reflect"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

func policy(t *testing.T, ann map[string]string) rules.Policy {
	t.Helper()
	p, errs := rules.ParseAnnotations(ann)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return p
}

// Origins follows rules.Merge: the pod's own rule of a kind and direction
// wins, else the first Service (by name, as Merge takes them).
func TestOrigins(t *testing.T) {
	srcs := []SourcePolicy{
		{Kind: "Service", Name: "a", Policy: policy(t, map[string]string{"kubeshaper.io/bandwidth": "10mbit egress; 20mbit ingress", "kubeshaper.io/loss": "uniform egress 1%"})},
		{Kind: "Service", Name: "b", Policy: policy(t, map[string]string{"kubeshaper.io/bandwidth": "30mbit egress", "kubeshaper.io/delay": "5ms ingress"})},
		{Kind: "Pod", Name: "p", Policy: policy(t, map[string]string{"kubeshaper.io/loss": "uniform egress 2%"})},
	}
	var pols []rules.Policy
	for _, s := range srcs[:2] {
		pols = append(pols, s.Policy)
	}
	eff := rules.Merge(pols, srcs[2].Policy)
	from, wins := Origins(eff, srcs)
	wantFrom := [2]map[string]string{
		{"bandwidth": "Service/a", "loss": "Pod"},
		{"bandwidth": "Service/a", "delay": "Service/b"},
	}
	if !reflect.DeepEqual(from, wantFrom) {
		t.Errorf("from = %v, want %v", from, wantFrom)
	}
	wantWins := map[int][]string{0: {"egress bandwidth", "ingress bandwidth"}, 1: {"ingress delay"}, 2: {"egress loss"}}
	if !reflect.DeepEqual(wins, wantWins) {
		t.Errorf("wins = %v, want %v", wins, wantWins)
	}
	// A rule the effective policy lacks (a time limit ended it) is nobody's.
	from, wins = Origins(srcs[2].Policy, srcs)
	if !reflect.DeepEqual(from, [2]map[string]string{{"loss": "Pod"}, nil}) || len(wins) != 1 {
		t.Errorf("pod only: from = %v, wins = %v", from, wins)
	}
}
