package rules

import (
	"net/netip"
	"testing"
)

func tgt(t *testing.T, proto Proto, peers []string, ports []PortRange, svc *ServiceRef) Target {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range peers {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	tg, err := NewTarget(proto, ps, ports, svc)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestParseTargets(t *testing.T) {
	pg := tgt(t, ProtoTCP, []string{"10.0.0.0/8", "fd00::/8"}, []PortRange{{5432, 5432}, {8080, 8090}}, nil)
	bwT := func(tg Target) DirectionPolicy {
		return DirectionPolicy{Bandwidth: &Bandwidth{RateBitsPerSec: 10e6, Mode: ModeDrop, Target: tg}}
	}
	lossT := func(pct float64, tg Target) DirectionPolicy {
		return DirectionPolicy{Loss: &Loss{Kind: LossUniform, Percent: pct, Target: tg}}
	}
	runValueCases(t, KeyBandwidth, []valueCase{
		{value: "10mbps egress to=10.0.0.0/8,fd00::/8 port=5432,8080-8090 proto=tcp", want: eg(bwT(pg))},
		{value: "PROTO=TCP port = 5432,8080-8090 10mbps to=10.1.2.3/8,fd00::1/8 egress", want: eg(bwT(pg))},
		{value: "10mbps egress to=10.1.2.3", want: eg(bwT(tgt(t, ProtoAny, []string{"10.1.2.3/32"}, nil, nil)))},
		{value: "10mbps egress to=2001:db8::1", want: eg(bwT(tgt(t, ProtoAny, []string{"2001:db8::1/128"}, nil, nil)))},
		{value: "10mbps egress mode=pace port=80", want: eg(DirectionPolicy{Bandwidth: &Bandwidth{RateBitsPerSec: 10e6, Mode: ModePace, Target: tgt(t, ProtoAny, nil, []PortRange{{80, 80}}, nil)}})},
		{value: "10mbps egress to=svc:db/postgres", want: eg(bwT(tgt(t, ProtoAny, nil, nil, &ServiceRef{"db", "postgres"})))},
		{value: "10mbps egress to=10.0.0.0/8,svc:postgres", want: eg(bwT(tgt(t, ProtoAny, []string{"10.0.0.0/8"}, nil, &ServiceRef{"", "postgres"})))},
		{value: "10mbps egress proto=icmp", want: eg(bwT(tgt(t, ProtoICMP, nil, nil, nil)))},

		{value: "10mbps egress mode=tbf port=80", wantErr: "mode=tbf shapes all"},
		{value: "10mbps egress to=", wantErr: "has no value"},
		{value: "10mbps egress to=10.0.0.0/8,", wantErr: "empty peer"},
		{value: "10mbps egress to=10.0.0.0/33", wantErr: "not a CIDR prefix"},
		{value: "10mbps egress to=fe80::1%eth0", wantErr: "not an IP address"},
		{value: "10mbps egress to=::ffff:10.0.0.1", wantErr: "IPv4-mapped"},
		{value: "10mbps egress to=db", wantErr: "not an IP address or CIDR prefix"},
		{value: "10mbps egress to=svc:Db/pg", wantErr: "namespace"},
		{value: "10mbps egress to=svc:db/9pg", wantErr: "Service name"},
		{value: "10mbps egress to=svc:a/b,svc:c/d", wantErr: "second Service"},
		{value: "10mbps egress to=1.1.1.1 to=2.2.2.2", wantErr: "to= given twice"},
		{value: "10mbps egress to=1.0.0.0/8,2.0.0.0/8,3.0.0.0/8,4.0.0.0/8,5.0.0.0/8,6.0.0.0/8,7.0.0.0/8,8.0.0.0/8,9.0.0.0/8,10.0.0.0/8,11.0.0.0/8,12.0.0.0/8,13.0.0.0/8,14.0.0.0/8,15.0.0.0/8,16.0.0.0/8,17.0.0.0/8", wantErr: "too many peers"},
		{value: "10mbps egress port=0", wantErr: "want a number from 1 to 65535"},
		{value: "10mbps egress port=65536", wantErr: "want a number from 1 to 65535"},
		{value: "10mbps egress port=90-80", wantErr: "is empty"},
		{value: "10mbps egress port=http", wantErr: "port \"http\" is invalid"},
		{value: "10mbps egress port=1,2,3,4,5,6,7,8,9", wantErr: "too many ports"},
		{value: "10mbps egress port=7 proto=icmp", wantErr: "ICMP has no ports"},
		{value: "10mbps egress proto=gre", wantErr: "unknown protocol"},
		{value: "10mbps egress host=1.2.3.4", wantErr: "unknown option"},
	})
	runValueCases(t, KeyLoss, []valueCase{
		{value: "uniform egress 2% port=5432", want: eg(lossT(2, tgt(t, ProtoAny, nil, []PortRange{{5432, 5432}}, nil)))},
		{value: "uniform egress 2% port=5432; uniform ingress 2% port=5432", want: both(lossT(2, tgt(t, ProtoAny, nil, []PortRange{{5432, 5432}}, nil)))},
	})
	runValueCases(t, KeyDelay, []valueCase{
		{value: "50ms egress proto=udp", want: eg(DirectionPolicy{Delay: &Delay{Delay: 50e6, Target: tgt(t, ProtoUDP, nil, nil, nil)}})},
	})
}

func TestParseGilbert(t *testing.T) {
	ge := func(g Gilbert, tg Target) DirectionPolicy {
		return DirectionPolicy{Loss: &Loss{Kind: LossGilbert, Gilbert: g, Target: tg}}
	}
	runValueCases(t, KeyLoss, []valueCase{
		{value: "gilbert egress p=1% r=25% h=0% k=100%", want: eg(ge(Gilbert{1, 25, 0, 100}, Target{}))},
		{value: "gilbert egress p=1%", want: eg(ge(Gilbert{1, 99, 0, 100}, Target{}))},
		{value: "egress GILBERT k = 99 % p=2 r=30 h=10", want: eg(ge(Gilbert{2, 30, 10, 99}, Target{}))},
		{value: "gilbert both p=1% r=0%", want: both(ge(Gilbert{1, 0, 0, 100}, Target{}))},
		{value: "gilbert ingress p=1% port=53 proto=udp", want: ing(ge(Gilbert{1, 99, 0, 100}, tgt(t, ProtoUDP, nil, []PortRange{{53, 53}}, nil)))},

		{value: "gilbert egress", wantErr: "gilbert needs p="},
		{value: "gilbert egress p=0%", wantErr: "never enters the bad state"},
		{value: "gilbert egress p=1% r=101%", wantErr: "r=\"101%\" is out of range"},
		{value: "gilbert egress p=1% h=-1", wantErr: "out of range"},
		{value: "gilbert egress p=x", wantErr: "not a percentage"},
		{value: "gilbert egress p=1% p=2%", wantErr: "p= given twice"},
		{value: "gilbert egress 2% p=1%", wantErr: "unexpected word"},
		{value: "uniform egress 2% p=1%", wantErr: "gilbert's parameters"},
		{value: "gilbert egress p=1% q=2%", wantErr: "unknown option"},
	})
}

func TestGilbertLossRate(t *testing.T) {
	for _, tc := range []struct {
		g    Gilbert
		want float64
	}{
		{Gilbert{1, 25, 0, 100}, 1.0 / 26}, // simple Gilbert: π_bad
		{Gilbert{1, 99, 0, 100}, 0.01},     // r = 1-p: Bernoulli
		{Gilbert{10, 10, 50, 90}, 0.5*0.1 + 0.5*0.5},
		{Gilbert{1, 0, 0, 100}, 1},    // absorbed in bad
		{Gilbert{5, 20, 100, 100}, 0}, // delivers everything
	} {
		if got := (Loss{Kind: LossGilbert, Gilbert: tc.g}).Probability(); got < tc.want-1e-12 || got > tc.want+1e-12 {
			t.Errorf("%+v: loss rate %v, want %v", tc.g, got, tc.want)
		}
	}
}

func TestParseDuplicateCorrupt(t *testing.T) {
	runValueCases(t, KeyDuplicate, []valueCase{
		{value: "egress 1%", want: eg(DirectionPolicy{Duplicate: &Duplicate{Percent: 1}})},
		{value: "1 % both proto=udp", want: both(DirectionPolicy{Duplicate: &Duplicate{Percent: 1, Target: tgt(t, ProtoUDP, nil, nil, nil)}})},
		{value: "egress", wantErr: "no percentage"},
		{value: "1%", wantErr: "no direction"},
		{value: "egress 0%", wantErr: "duplicate \"0%\" is out of range"},
		{value: "egress 1% 2%", wantErr: "unexpected word"},
		{value: "egress 1% burst=1", wantErr: "unknown option"},
	})
	runValueCases(t, KeyCorrupt, []valueCase{
		{value: "ingress 0.1%", want: ing(DirectionPolicy{Corrupt: &Corrupt{Percent: 0.1}})},
		{value: "ingress 0.1% port=80", want: ing(DirectionPolicy{Corrupt: &Corrupt{Percent: 0.1, Target: tgt(t, ProtoAny, nil, []PortRange{{80, 80}}, nil)}})},
		{value: "ingress 101%", wantErr: "corrupt \"101%\" is out of range"},
	})
}

func TestTargetsAndServices(t *testing.T) {
	a := tgt(t, ProtoTCP, nil, []PortRange{{80, 80}}, nil)
	b := tgt(t, ProtoAny, nil, nil, &ServiceRef{"", "db"})
	dp := DirectionPolicy{
		Bandwidth: &Bandwidth{RateBitsPerSec: 1e6, Mode: ModeDrop, Target: a},
		Loss:      &Loss{Kind: LossUniform, Percent: 1, Target: a},
		Delay:     &Delay{Delay: 1e6},
		Corrupt:   &Corrupt{Percent: 1, Target: b},
	}
	if got := dp.Targets(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("Targets() = %v, want [a b] once each, the untargeted delay left out", got)
	}
	p := Policy{dp, {}}.WithServiceNamespace("shop")
	if s := p.Services(); len(s) != 1 || s[0] != (ServiceRef{"shop", "db"}) {
		t.Fatalf("Services() = %v", s)
	}
	if dp.Corrupt.Target.Service.Namespace != "" {
		t.Fatal("WithServiceNamespace changed its receiver")
	}
}
