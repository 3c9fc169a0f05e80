package rules

import (
	"testing"
	"time"
)

func fullPolicy() Policy {
	return Policy{
		{
			Bandwidth: &Bandwidth{RateBitsPerSec: 10_000_000, Mode: ModeDrop},
			Loss:      &Loss{Kind: LossUniform, Percent: 2},
			Delay:     &Delay{Delay: 50 * time.Millisecond},
			Program:   &Program{Name: "dropper", Params: []Param{{"DROP", "1"}, {"PORT", "80"}}},
		},
		{
			Bandwidth: &Bandwidth{RateBitsPerSec: 1_000_000_000, BurstBytes: 65536, Mode: ModePace},
			Loss:      &Loss{Kind: LossExponential, Threshold: 300},
			Delay:     &Delay{Delay: 80 * time.Millisecond, Jitter: 10 * time.Millisecond},
		},
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		p    Policy
		want string
	}{
		{Policy{}, "none"},
		{eg(bwp(10_000_000, 0, ModeDrop)), "egress: bandwidth 10mbit burst=auto mode=drop"},
		{ing(bwp(8_001, 1500, "")), "ingress: bandwidth 8001bit burst=1500b mode=drop"},
		{both(uniform(0.05)), "egress: loss uniform 0.05% | ingress: loss uniform 0.05%"},
		{fullPolicy(), "egress: bandwidth 10mbit burst=auto mode=drop; loss uniform 2%; delay 50ms; program dropper DROP=1 PORT=80" +
			" | ingress: bandwidth 1gbit burst=64kib mode=pace; loss exponential 300 (p=4.979%); delay 80ms jitter=10ms"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String()\n got  %s\n want %s", got, tc.want)
		}
	}
	if got := (DirectionPolicy{}).String(); got != "none" {
		t.Errorf("empty DirectionPolicy.String() = %q", got)
	}
}

func TestAnnotations(t *testing.T) {
	got := fullPolicy().Annotations()
	want := map[string]string{
		KeyBandwidth: "10mbit egress; 1gbit ingress burst=64kib mode=pace",
		KeyLoss:      "uniform egress 2%; exponential ingress 300",
		KeyDelay:     "50ms egress; 80ms ingress jitter=10ms",
		KeyProgram:   "dropper egress DROP=1 PORT=80",
	}
	if len(got) != len(want) {
		t.Errorf("Annotations() = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Annotations()[%s] = %q, want %q", k, got[k], v)
		}
	}
	back, errs := ParseAnnotations(got)
	if len(errs) != 0 || !back.Equal(fullPolicy()) {
		t.Errorf("round trip: %v, %v", back, errs)
	}
	// Identical directions collapse into "both".
	if got := both(prog("x", "A", "1")).Annotations()[KeyProgram]; got != "x both A=1" {
		t.Errorf("both collapse: %q", got)
	}
	if got := (Policy{}).Annotations(); len(got) != 0 {
		t.Errorf("empty policy renders %v", got)
	}
}

func TestIsEmptyEqualClone(t *testing.T) {
	if !(Policy{}).IsEmpty() || !(DirectionPolicy{}).IsEmpty() {
		t.Error("zero values are not empty")
	}
	for _, dp := range []DirectionPolicy{bwp(8000, 0, ModeDrop), uniform(1), dl(1, 0), prog("x")} {
		if dp.IsEmpty() || eg(dp).IsEmpty() || ing(dp).IsEmpty() {
			t.Errorf("%v reported empty", dp)
		}
	}

	a, b := fullPolicy(), fullPolicy()
	if !a.Equal(b) {
		t.Error("equal policies with distinct pointers compare unequal")
	}
	for name, mutate := range map[string]func(*Policy){
		"rate":        func(p *Policy) { p[Egress].Bandwidth.RateBitsPerSec++ },
		"mode":        func(p *Policy) { p[Ingress].Bandwidth.Mode = ModeTBF },
		"percent":     func(p *Policy) { p[Egress].Loss.Percent = 3 },
		"threshold":   func(p *Policy) { p[Ingress].Loss.Threshold = 301 },
		"jitter":      func(p *Policy) { p[Ingress].Delay.Jitter = 0 },
		"param value": func(p *Policy) { p[Egress].Program.Params[1].Value = "81" },
		"param order": func(p *Policy) {
			ps := p[Egress].Program.Params
			ps[0], ps[1] = ps[1], ps[0]
		},
		"program name": func(p *Policy) { p[Egress].Program.Name = "other" },
		"nil vs set":   func(p *Policy) { p[Egress].Delay = nil },
		"direction":    func(p *Policy) { p[Egress], p[Ingress] = p[Ingress], p[Egress] },
	} {
		c := fullPolicy()
		mutate(&c)
		if c.Equal(a) || a.Equal(c) {
			t.Errorf("%s: changed policy still compares equal", name)
		}
	}
	if !eg(prog("x")).Equal(eg(DirectionPolicy{Program: &Program{Name: "x", Params: []Param{}}})) {
		t.Error("nil and empty Params differ")
	}

	c := a.Clone()
	if !c.Equal(a) {
		t.Fatal("clone differs")
	}
	c[Egress].Bandwidth.RateBitsPerSec = 1
	c[Egress].Program.Params[0].Value = "9"
	c[Ingress].Delay.Delay = time.Second
	if !a.Equal(b) {
		t.Error("changing the clone changed the original")
	}
}
