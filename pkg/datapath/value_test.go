package datapath

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TestConfigReadsBack: every kind of rule, targeted or not, written as
// the map value reads back as the same Config (what Lookup returns is
// what Set was given), and the value holds what follows from the rule.
// Pure: no kernel.
func TestConfigReadsBack(t *testing.T) {
	udp := mustTarget(t, rules.ProtoUDP, nil, []rules.PortRange{{Lo: 53, Hi: 53}, {Lo: 8080, Hi: 8090}}, nil)
	peer := mustTarget(t, rules.ProtoAny, []string{"10.0.0.0/8"}, []rules.PortRange{{Lo: 53, Hi: 53}}, nil)
	tcp := mustTarget(t, rules.ProtoTCP, nil, nil, nil)
	cases := map[string]rules.DirectionPolicy{
		"empty":      {},
		"drop":       {Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, BurstBytes: 100000}},
		"pace":       {Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e8, Mode: rules.ModePace}},
		"tbf":        {Bandwidth: &rules.Bandwidth{RateBitsPerSec: 1e9, Mode: rules.ModeTBF}},
		"gilbert":    {Loss: &rules.Loss{Kind: rules.LossGilbert, Gilbert: rules.Gilbert{P: 1, R: 20, H: 50, K: 99}}},
		"delay":      {Delay: &rules.Delay{Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond}},
		"dup+crpt":   {Duplicate: &rules.Duplicate{Percent: 1}, Corrupt: &rules.Corrupt{Percent: 2}},
		"uniform":    {Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 3}},
		"targeted":   {Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, Target: udp}, Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 3, Target: peer}, Delay: &rules.Delay{Delay: time.Millisecond, Target: udp}, Corrupt: &rules.Corrupt{Percent: 2, Target: tcp}},
		"one-of-two": {Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 3, Target: tcp}, Duplicate: &rules.Duplicate{Percent: 1}},
	}
	for name, p := range cases {
		cfg, err := ConfigFor(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cfg.EnableFlows()
		cfg.SetAtPod()
		r, err := cfg.value()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back := configOf(r); !reflect.DeepEqual(back, cfg) {
			t.Errorf("%s: %+v read back as %+v", name, cfg, back)
		}
		if got, want := r.Flags&uint32(fTargeted) != 0, len(p.Targets()) > 0; got != want {
			t.Errorf("%s: targeted flag %v, want %v", name, got, want)
		}
	}

	// The targets: udp gates bandwidth and delay, peer loss, tcp corrupt;
	// port 53 is one range shared by udp and peer.
	cfg, err := ConfigFor(cases["targeted"])
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cfg.value()
	tg := r.Tg
	if tg.Flags != [maxTargets]uint32{uint32(fRate | fDelay), uint32(fLoss), uint32(fCorrupt)} ||
		tg.Udp != 0b001 || tg.AnyProto != 0b010 || tg.Tcp != 0b100 || tg.AnyPeer != 0b101 || tg.AnyPort != 0b100 ||
		tg.Nranges != 2 || tg.Ranges[0] != (shaperKsPortRange{Lo: 53, Hi: 53, Targets: 0b011}) || tg.Ranges[1] != (shaperKsPortRange{Lo: 8080, Hi: 8090, Targets: 0b001}) {
		t.Errorf("targets compiled as %+v", tg)
	}
	if r.RateQ32 != rateQ32(1e6) || r.Debt != min(uint64(GSODebt), cfg.Burst) || r.SparseMax != SparseMax || r.FillNs == 0 || r.HorizonNs != uint64(DefaultHorizon+time.Millisecond) {
		t.Errorf("derived fields %+v", r)
	}
	if s := cfg.String(); !strings.Contains(s, "bandwidth 8mbit") || !strings.Contains(s, "port=53,8080-8090 proto=udp") || !strings.Contains(s, "loss 3% to=… port=53") {
		t.Errorf("String %q", s)
	}
}

// TestValueLimits: the grammar's limits fill the value exactly (5
// targets of 8 ranges), and a Config beyond the value's limits is refused
// by value (Set checks it before it touches a map).
func TestValueLimits(t *testing.T) {
	var ports [maxTargets][]rules.PortRange
	for i := range ports {
		for j := range rules.MaxTargetPorts {
			lo := uint16(1000*(i+1) + 10*j)
			ports[i] = append(ports[i], rules.PortRange{Lo: lo, Hi: lo})
		}
	}
	tg := func(i int) rules.Target { return mustTarget(t, rules.ProtoAny, nil, ports[i], nil) }
	p := rules.DirectionPolicy{
		Bandwidth: &rules.Bandwidth{RateBitsPerSec: 8e6, Target: tg(0)},
		Loss:      &rules.Loss{Kind: rules.LossUniform, Percent: 1, Target: tg(1)},
		Delay:     &rules.Delay{Delay: time.Millisecond, Target: tg(2)},
		Duplicate: &rules.Duplicate{Percent: 1, Target: tg(3)},
		Corrupt:   &rules.Corrupt{Percent: 1, Target: tg(4)},
	}
	cfg, err := ConfigFor(p)
	if err != nil {
		t.Fatalf("%d targets of %d ranges: %v", maxTargets, rules.MaxTargetPorts, err)
	}
	more := cfg
	more.Targets = append(append([]Target(nil), cfg.Targets...), Target{})
	if _, err := more.value(); err == nil || !strings.Contains(err.Error(), "targets in one direction") {
		t.Errorf("%d targets: %v", len(more.Targets), err)
	}
	more = cfg
	more.Targets = append([]Target(nil), cfg.Targets...)
	more.Targets[0].Ports = append(append([]rules.PortRange(nil), cfg.Targets[0].Ports...), rules.PortRange{Lo: 1, Hi: 1})
	if _, err := more.value(); err == nil || !strings.Contains(err.Error(), "port ranges") {
		t.Errorf("%d ranges: %v", maxRanges+1, err)
	}
}
