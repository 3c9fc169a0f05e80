package datapath

import (
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TestEveryKindMapped: the datapath has a row for every kind of
// pkg/rules' table and none for a kind that does not exist; each row that
// writes a rule renders it back, under the kind's name, with its target.
func TestEveryKindMapped(t *testing.T) {
	tcp := mustTarget(t, rules.ProtoTCP, nil, []rules.PortRange{{Lo: 80, Hi: 80}}, nil)
	// One rule of each kind that is part of the value, targeted.
	sample := rules.DirectionPolicy{
		Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, Target: tcp},
		Loss:      &rules.Loss{Kind: rules.LossUniform, Percent: 1, Target: tcp},
		Delay:     &rules.Delay{Delay: time.Millisecond, Target: tcp},
		Duplicate: &rules.Duplicate{Percent: 1, Target: tcp},
		Corrupt:   &rules.Corrupt{Percent: 1, Target: tcp},
	}
	cfg, err := ConfigFor(sample)
	if err != nil {
		t.Fatal(err)
	}
	text := cfg.String()
	names := map[string]bool{}
	for _, k := range rules.Kinds() {
		names[k.Name()] = true
		m, ok := kindMaps[k.Name()]
		if !ok {
			t.Errorf("kind %s has no row in kindMaps", k.Name())
			continue
		}
		if m.set == nil {
			continue
		}
		if m.text == nil || m.gates == 0 {
			t.Errorf("kind %s: a row that writes a rule needs text and gates", k.Name())
		}
		if k.Rule(sample) == nil {
			t.Errorf("kind %s: the sample policy has no rule of it: add one", k.Name())
		}
		if !strings.Contains(text, k.Name()+" ") {
			t.Errorf("kind %s is missing from %q", k.Name(), text)
		}
	}
	for name := range kindMaps {
		if !names[name] {
			t.Errorf("kindMaps has a row for %s, which pkg/rules does not know", name)
		}
	}
	if got := strings.Count(text, "port=80 proto=tcp"); got != len(strings.Split(text, "; ")) {
		t.Errorf("%q: want every rule's target", text)
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].gates != fRate|fLoss|fDelay|fDup|fCorrupt {
		t.Errorf("targets %+v: want one gating every kind", cfg.Targets)
	}
}

// TestKindWithoutRowRefused: a kind the datapath cannot write is an
// error naming where its row goes, not a rule silently left out.
func TestKindWithoutRowRefused(t *testing.T) {
	row := kindMaps["delay"]
	delete(kindMaps, "delay")
	defer func() { kindMaps["delay"] = row }()
	_, err := ConfigFor(rules.DirectionPolicy{Delay: &rules.Delay{Delay: time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "kinds.go") {
		t.Fatalf("ConfigFor without the delay row: %v", err)
	}
}

// TestTBFTargetRefused: a policy built in code is checked as the grammar
// checks an annotation (rules.Bandwidth.Check, one message).
func TestTBFTargetRefused(t *testing.T) {
	tg := mustTarget(t, rules.ProtoUDP, nil, nil, nil)
	_, err := ConfigFor(rules.DirectionPolicy{Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, Mode: rules.ModeTBF, Target: tg}})
	if err == nil || !strings.Contains(err.Error(), "mode=tbf shapes all") {
		t.Fatalf("tbf with a target: %v", err)
	}
}
