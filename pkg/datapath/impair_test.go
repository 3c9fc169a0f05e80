package datapath

import (
	"encoding/binary"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/bounds"
)

// pkt builds Ethernet + IPv4/IPv6 + TCP/UDP (or ICMP) carrying payload
// bytes, with a complete L4 checksum (as after a NIC verified it, or a
// pod that computes checksums in software).
func pkt(proto uint8, src, dst netip.Addr, sport, dport uint16, payload int) []byte {
	l4hdr := 8
	if proto == 6 {
		l4hdr = 20
	}
	l3 := 20
	if src.Is6() {
		l3 = 40
	}
	p := make([]byte, 14+l3+l4hdr+payload)
	copy(p[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(p[6:12], []byte{2, 0, 0, 0, 0, 1})
	ip := p[14:]
	l4len := l4hdr + payload
	if src.Is4() {
		binary.BigEndian.PutUint16(p[12:], 0x0800)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(l3+l4len))
		ip[8], ip[9] = 64, proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	} else {
		binary.BigEndian.PutUint16(p[12:], 0x86dd)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(l4len))
		ip[6], ip[7] = proto, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
	}
	l4 := ip[l3:]
	for i := range payload {
		l4[l4hdr+i] = byte(i)
	}
	switch proto {
	case 6:
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		l4[12] = 5 << 4
		l4[13] = 0x10
	case 17:
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(l4len))
	default:
		return p
	}
	off := 16
	if proto == 17 {
		off = 6
	}
	binary.BigEndian.PutUint16(l4[off:], l4checksum(src, dst, proto, l4))
	return p
}

// l4checksum is the Internet checksum of an L4 segment and its pseudo
// header (the checksum field must be zero).
func l4checksum(src, dst netip.Addr, proto uint8, l4 []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	var ph [4]byte
	binary.BigEndian.PutUint16(ph[2:], uint16(len(l4)))
	add(ph[:])
	add([]byte{0, proto})
	add(l4)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	c := ^uint16(sum)
	if c == 0 && proto == 17 {
		c = 0xffff
	}
	return c
}

var (
	podV4  = netip.MustParseAddr("10.244.0.5")
	peerV4 = netip.MustParseAddr("10.1.2.3")
	farV4  = netip.MustParseAddr("192.168.7.7")
	podV6  = netip.MustParseAddr("fd00:244::5")
	peerV6 = netip.MustParseAddr("fd00::1")
	farV6  = netip.MustParseAddr("2001:db8::7")
)

func mustTarget(t testing.TB, proto rules.Proto, peers []string, ports []rules.PortRange, svc *rules.ServiceRef) rules.Target {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range peers {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	tg, err := rules.NewTarget(proto, ps, ports, svc)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// setTargeted installs p for lo's dir with its peers, as the shaper does.
func setTargeted(t testing.TB, dp *Datapath, dir rules.Direction, p rules.DirectionPolicy, svc ServicePeers) Config {
	t.Helper()
	cfg, err := ConfigFor(p)
	if err != nil {
		t.Fatal(err)
	}
	key := KeyOf(loIfindex, dir)
	if err := dp.SetPeers(key, PeersFor(p, svc)); err != nil {
		t.Fatal(err)
	}
	if err := dp.Set(key, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTargetedByPortAndProto: a port-targeted 100% loss drops exactly the
// packets to or from that port, of that protocol; the rest are counted.
func TestTargetedByPortAndProto(t *testing.T) {
	dp := openTest(t)
	tg := mustTarget(t, rules.ProtoUDP, nil, []rules.PortRange{{Lo: 5432, Hi: 5432}, {Lo: 8080, Hi: 8090}}, nil)
	setTargeted(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100, Target: tg}}, nil)
	cases := []struct {
		name string
		pkt  []byte
		drop bool
	}{
		{"udp to 5432", pkt(17, podV4, peerV4, 40000, 5432, 64), true},
		{"udp from 5432", pkt(17, podV4, peerV4, 5432, 40000, 64), true},
		{"udp to 8085 (range)", pkt(17, podV4, peerV4, 40000, 8085, 64), true},
		{"udp to 8090 (range end)", pkt(17, podV4, peerV4, 40000, 8090, 64), true},
		{"udp to 8091", pkt(17, podV4, peerV4, 40000, 8091, 64), false},
		{"udp to 5201", pkt(17, podV4, peerV4, 40000, 5201, 64), false},
		{"tcp to 5432 (other proto)", pkt(6, podV4, peerV4, 40000, 5432, 64), false},
		{"udp6 to 5432", pkt(17, podV6, peerV6, 40000, 5432, 64), true},
		{"icmp", pkt(1, podV4, peerV4, 0, 0, 64), false},
		{"not IP (ARP)", func() []byte { p := udpPacket(64); binary.BigEndian.PutUint16(p[12:], 0x0806); return p }(), false},
	}
	drops := 0
	for _, tc := range cases {
		ret := run(t, dp, rules.Egress, tc.pkt, nil)
		if (ret == actShot) != tc.drop {
			t.Errorf("%s: ret %d, want drop=%v", tc.name, ret, tc.drop)
		}
		if tc.drop {
			drops++
		}
	}
	c := counters(t, dp, rules.Egress)
	if c.Packets != uint64(len(cases)) || c.DropPackets[ReasonLoss] != uint64(drops) {
		t.Errorf("counted %d packets, %d loss drops; want %d and %d", c.Packets, c.DropPackets[ReasonLoss], len(cases), drops)
	}
}

// TestTargetedByPeer: peers are the destination of pod egress and the
// source of pod ingress, IPv4 and IPv6; overlapping prefixes of two
// targets (a /8 for loss, a /16 inside it for delay) are both honoured by
// the longest match.
func TestTargetedByPeer(t *testing.T) {
	dp := openTest(t)
	lossT := mustTarget(t, rules.ProtoAny, []string{"10.0.0.0/8", "fd00::/8"}, []rules.PortRange{{Lo: 9, Hi: 9}}, nil)
	delayT := mustTarget(t, rules.ProtoAny, []string{"10.1.0.0/16"}, nil, nil)
	pol := rules.DirectionPolicy{
		Loss:  &rules.Loss{Kind: rules.LossUniform, Percent: 100, Target: lossT},
		Delay: &rules.Delay{Delay: 50e6, Target: delayT},
	}
	for _, dir := range rules.Directions {
		setTargeted(t, dp, dir, pol, nil)
	}
	type want struct{ drop, delay bool }
	cases := []struct {
		name       string
		peer, self netip.Addr
		port       uint16
		want       want
	}{
		{"10.1.2.3:9: both targets", peerV4, podV4, 9, want{drop: true}},
		{"10.1.2.3:80: delay only", peerV4, podV4, 80, want{delay: true}},
		{"10.9.9.9:9: loss only", netip.MustParseAddr("10.9.9.9"), podV4, 9, want{drop: true}},
		{"10.9.9.9:80: neither", netip.MustParseAddr("10.9.9.9"), podV4, 80, want{}},
		{"192.168.7.7:9: neither", farV4, podV4, 9, want{}},
		{"[fd00::1]:9: loss", peerV6, podV6, 9, want{drop: true}},
		{"[2001:db8::7]:9: neither", farV6, podV6, 9, want{}},
	}
	for _, dir := range rules.Directions {
		for _, tc := range cases {
			// The peer is the destination when the pod sends, the source
			// when it receives.
			p := pkt(17, tc.self, tc.peer, 40000, tc.port, 64)
			if dir == rules.Ingress {
				p = pkt(17, tc.peer, tc.self, tc.port, 40000, 64)
			}
			ctx := &skbCtx{}
			ret := run(t, dp, dir, p, ctx)
			got := want{drop: ret == actShot, delay: ctx.Tstamp != 0}
			if got != tc.want {
				t.Errorf("%s %s: got %+v, want %+v", dir, tc.name, got, tc.want)
			}
		}
		// The pod's own address is not a peer: an egress packet from a
		// peer-range address to elsewhere does not match.
		if dir == rules.Egress {
			if ret := run(t, dp, dir, pkt(17, peerV4, farV4, 40000, 9, 64), nil); ret == actShot {
				t.Errorf("egress matched the source address")
			}
		}
	}
	// Removing the targets removes their peers; a new policy's targets
	// replace the old ones.
	setTargeted(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100}}, nil)
	if peers, err := dp.Peers(KeyOf(loIfindex, rules.Egress)); err != nil || len(peers) != 0 {
		t.Fatalf("peers left after the targets went: %v %v", peers, err)
	}
	if err := dp.Delete(KeyOf(loIfindex, rules.Ingress)); err != nil {
		t.Fatal(err)
	}
	if peers, _ := dp.Peers(KeyOf(loIfindex, rules.Ingress)); len(peers) != 0 {
		t.Fatalf("peers left after Delete: %v", peers)
	}
}

// TestTargetedByService: a Service target's peers come from the resolver
// (its endpoints), and an unresolved Service matches no peer.
func TestTargetedByService(t *testing.T) {
	dp := openTest(t)
	svc := rules.ServiceRef{Namespace: "db", Name: "pg"}
	tg := mustTarget(t, rules.ProtoAny, nil, nil, &svc)
	pol := rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100, Target: tg}}
	endpoints := []netip.Prefix{netip.PrefixFrom(peerV4, 32), netip.PrefixFrom(peerV6, 128)}
	setTargeted(t, dp, rules.Egress, pol, func(s rules.ServiceRef) []netip.Prefix {
		if s == svc {
			return endpoints
		}
		return nil
	})
	if ret := run(t, dp, rules.Egress, pkt(17, podV4, peerV4, 1, 2, 64), nil); ret != actShot {
		t.Error("endpoint not matched")
	}
	if ret := run(t, dp, rules.Egress, pkt(17, podV6, peerV6, 1, 2, 64), nil); ret != actShot {
		t.Error("IPv6 endpoint not matched")
	}
	if ret := run(t, dp, rules.Egress, pkt(17, podV4, farV4, 1, 2, 64), nil); ret == actShot {
		t.Error("non-endpoint matched")
	}
	setTargeted(t, dp, rules.Egress, pol, nil)
	if ret := run(t, dp, rules.Egress, pkt(17, podV4, peerV4, 1, 2, 64), nil); ret == actShot {
		t.Error("a Service without endpoints matched")
	}
}

// runSequence runs n packets one by one and returns which were dropped.
func runSequence(t *testing.T, dp *Datapath, dir rules.Direction, p []byte, n int) []bool {
	t.Helper()
	prog := dp.Program(dir)
	out := make([]bool, n)
	for i := range n {
		ret, err := prog.Run(&ebpf.RunOptions{Data: p, Context: skbCtx{}})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ret == actShot
	}
	return out
}

// TestGilbertElliottWithinBounds: over 100,000 packets the loss rate and
// the mean burst length match the model within bounds.Z standard
// deviations (sized for the whole CI run: tests/bounds). With h=0% and k=100%
// (the "simple Gilbert" model) a burst is a stay in the bad state:
// geometric with mean 1/r; the loss rate is p/(p+r). The packets of a
// sequence are correlated: the variance of the loss count is the binomial
// one inflated by the chain's memory (second eigenvalue λ = 1-p-r).
func TestGilbertElliottWithinBounds(t *testing.T) {
	dp := openTest(t)
	const n = 100000
	for _, g := range []rules.Gilbert{
		{P: 1, R: 25, H: 0, K: 100},
		{P: 5, R: 30, H: 20, K: 99},
	} {
		key := KeyOf(loIfindex, rules.Egress)
		if err := dp.Delete(key); err != nil {
			t.Fatal(err)
		}
		set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossGilbert, Gilbert: g}})
		seq := runSequence(t, dp, rules.Egress, udpPacket(64), n)

		lost, bursts := 0, 0
		for i, l := range seq {
			if l {
				lost++
				if i == 0 || !seq[i-1] {
					bursts++
				}
			}
		}
		p, r := g.P/100, g.R/100
		a, b := 1-g.K/100, 1-g.H/100 // loss in good, in bad
		piB := p / (p + r)
		mu := (1-piB)*a + piB*b
		lambda := 1 - p - r
		varSum := n * (mu*(1-mu) + 2*(b-a)*(b-a)*piB*(1-piB)*lambda/(1-lambda))
		sigma := math.Sqrt(varSum)
		t.Logf("%+v: %d lost of %d (model %.0f ± %.0f), %d bursts, mean burst %.3f", g, lost, n, n*mu, bounds.Z*sigma, bursts, float64(lost)/float64(bursts))
		if lo, hi := bounds.Normal(n*mu, sigma); float64(lost) < lo || float64(lost) > hi {
			t.Errorf("%+v: %d lost, want %.0f ± %.0f (%.1fσ)", g, lost, n*mu, hi-n*mu, bounds.Z)
		}
		if c := counters(t, dp, rules.Egress); c.DropPackets[ReasonLoss] != uint64(lost) {
			t.Errorf("loss counter %d, %d seen dropped", c.DropPackets[ReasonLoss], lost)
		}
		if g.H == 0 && g.K == 100 {
			mean := float64(lost) / float64(bursts)
			sd := math.Sqrt((1 - r) / (r * r) / float64(bursts)) // of the mean of geometric lengths
			if lo, hi := bounds.Normal(1/r, sd); mean < lo || mean > hi {
				t.Errorf("%+v: mean burst %.3f, want %.3f ± %.3f (%.1fσ)", g, mean, 1/r, hi-1/r, bounds.Z)
			}
		}
	}
	// BPF_PROG_TEST_RUN's repeat runs the same packet through the same
	// state machine: the count holds there too.
	g := rules.Gilbert{P: 2, R: 20, H: 0, K: 100}
	if err := dp.Delete(KeyOf(loIfindex, rules.Egress)); err != nil {
		t.Fatal(err)
	}
	set(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossGilbert, Gilbert: g}})
	if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: udpPacket(64), Context: skbCtx{}, Repeat: n}); err != nil {
		t.Fatal(err)
	}
	p, r := g.P/100, g.R/100
	mu := p / (p + r)
	c := counters(t, dp, rules.Egress)
	seen := float64(c.Packets) // ≥ n: an interrupted run is re-issued whole
	sigma := math.Sqrt(seen * mu * (1 - mu) * (2 - p - r) / (p + r))
	if got, lo, hi := float64(c.DropPackets[ReasonLoss]), seen*mu-bounds.Z*sigma, seen*mu+bounds.Z*sigma; got < lo || got > hi {
		t.Errorf("repeat: %v lost of %v, want %.0f ± %.0f (%.1fσ)", got, seen, seen*mu, bounds.Z*sigma, bounds.Z)
	}
}

// TestDuplicateAndCorruptRatesWithinBounds counts clones sent and bits
// flipped over 100,000 packets (BPF_PROG_TEST_RUN repeat; the clones go
// out on lo, where nothing of ours runs).
func TestDuplicateAndCorruptRatesWithinBounds(t *testing.T) {
	dp := openTest(t)
	const n = 100000
	p := pkt(17, podV4, peerV4, 40000, 5201, 64)
	for _, dir := range rules.Directions {
		for _, pct := range []float64{1, 10} {
			key := KeyOf(loIfindex, dir)
			if err := dp.Delete(key); err != nil {
				t.Fatal(err)
			}
			set(t, dp, dir, rules.DirectionPolicy{
				Duplicate: &rules.Duplicate{Percent: pct},
				Corrupt:   &rules.Corrupt{Percent: pct},
			})
			// The clones queue to the CPU's backlog (netdev_max_backlog,
			// 1000), which drains when each run returns: in one run of
			// 100,000 a slow (emulated) CPU overflows it and the clones
			// that could not be sent are rightly not counted. Runs of 1,000
			// queue at most ~100.
			for range n / 1000 {
				if _, err := dp.Program(dir).Run(&ebpf.RunOptions{Data: p, Context: skbCtx{}, Repeat: 1000}); err != nil {
					t.Fatal(err)
				}
			}
			c := counters(t, dp, dir)
			q := pct / 100
			// A run the kernel interrupted is re-issued whole (see
			// TestLossRateWithinBounds): the bound is for the packets seen.
			lo, hi := bounds.Binomial(int64(c.Packets), q)
			t.Logf("%s %g%%: %d duplicated, %d corrupted, %d skipped (want within [%d, %d])", dir, pct, c.Duplicated, c.Corrupted, c.CorruptSkipped, lo, hi)
			for what, got := range map[string]uint64{"duplicated": c.Duplicated, "corrupted": c.Corrupted} {
				if int64(got) < lo || int64(got) > hi {
					t.Errorf("%s %g%%: %d %s of %d, want within [%d, %d] (p=%g; tests/bounds)", dir, pct, got, what, c.Packets, lo, hi, q)
				}
			}
			if c.CorruptSkipped != 0 || c.Packets < n {
				t.Errorf("%s: %d skipped, %d packets", dir, c.CorruptSkipped, c.Packets)
			}
		}
	}
}

// TestCorruptFlipsOnePayloadBit: exactly one bit of the L4 payload
// changes; headers and checksum stay; a packet the receiver would not
// check (checksum still partial, UDP without one) is left alone.
func TestCorruptFlipsOnePayloadBit(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Egress, rules.DirectionPolicy{Corrupt: &rules.Corrupt{Percent: 100}})
	for _, tc := range []struct {
		name string
		pkt  []byte
		hdr  int
	}{
		{"udp4", pkt(17, podV4, peerV4, 1000, 2000, 200), 14 + 20 + 8},
		{"tcp4", pkt(6, podV4, peerV4, 1000, 2000, 200), 14 + 20 + 20},
		{"udp6", pkt(17, podV6, peerV6, 1000, 2000, 200), 14 + 40 + 8},
		{"tcp6", pkt(6, podV6, peerV6, 1000, 2000, 200), 14 + 40 + 20},
	} {
		out := make([]byte, len(tc.pkt))
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: tc.pkt, DataOut: out, Context: skbCtx{}}); err != nil {
			t.Fatal(err)
		}
		flipped := 0
		for i := range out {
			d := out[i] ^ tc.pkt[i]
			if d != 0 && i < tc.hdr {
				t.Errorf("%s: header byte %d changed", tc.name, i)
			}
			for ; d != 0; d &= d - 1 {
				flipped++
			}
		}
		if flipped != 1 {
			t.Errorf("%s: %d bits flipped, want 1", tc.name, flipped)
		}
	}
	// Partial checksum: the field holds the pseudo header's sum only.
	partial := pkt(17, podV4, peerV4, 1000, 2000, 200)
	l4 := partial[34:]
	binary.BigEndian.PutUint16(l4[6:], ^pseudoSum(podV4, peerV4, 17, len(l4)))
	noCsum := pkt(17, podV4, peerV4, 1000, 2000, 200)
	binary.BigEndian.PutUint16(noCsum[34+6:], 0)
	before := counters(t, dp, rules.Egress)
	for _, p := range [][]byte{partial, noCsum} {
		out := make([]byte, len(p))
		if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: p, DataOut: out, Context: skbCtx{}}); err != nil {
			t.Fatal(err)
		}
		if string(out) != string(p) {
			t.Error("a packet the receiver would not check was corrupted")
		}
	}
	if c := counters(t, dp, rules.Egress); c.CorruptSkipped-before.CorruptSkipped != 2 {
		t.Errorf("%d skipped, want 2", c.CorruptSkipped-before.CorruptSkipped)
	}
}

// pseudoSum is the folded (not inverted) sum of the IPv4/IPv6 pseudo
// header: what a CHECKSUM_PARTIAL packet's checksum field holds, inverted.
func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	var ph [4]byte
	binary.BigEndian.PutUint16(ph[2:], uint16(l4len))
	add(ph[:])
	add([]byte{0, proto})
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func TestSetDuplicateMark(t *testing.T) {
	dp := openTest(t)
	var m uint32
	if err := dp.objs.KsDupMark.Get(&m); err != nil || m != DefaultDuplicateMark {
		t.Fatalf("default mark %#x (%v), want %#x", m, err, DefaultDuplicateMark)
	}
	if err := dp.SetDuplicateMark(0x3); err == nil {
		t.Fatal("two bits accepted")
	}
	if err := dp.SetDuplicateMark(0x8000_0000); err != nil {
		t.Fatal(err)
	}
	if err := dp.objs.KsDupMark.Get(&m); err != nil || m != 0x8000_0000 {
		t.Fatalf("mark %#x after set (%v)", m, err)
	}
	// A clone carrying the bit at tc ingress is recognized and the bit
	// cleared; the others are duplicated.
	set(t, dp, rules.Egress, rules.DirectionPolicy{Duplicate: &rules.Duplicate{Percent: 100}})
	ctx := &skbCtx{Mark: 0x8000_0001}
	run(t, dp, rules.Egress, udpPacket(64), ctx)
	if ctx.Mark != 1 {
		t.Errorf("clone's mark %#x after the program, want the bit cleared (0x1)", ctx.Mark)
	}
	if c := counters(t, dp, rules.Egress); c.Duplicated != 0 {
		t.Errorf("a clone was duplicated again")
	}
	run(t, dp, rules.Egress, udpPacket(64), nil)
	if c := counters(t, dp, rules.Egress); c.Duplicated != 1 {
		t.Errorf("%d duplicated, want 1", c.Duplicated)
	}
}

func TestRuleSetRecordsSurviveReopen(t *testing.T) {
	dp := openTest(t)
	k := NewRuleSetKey("uid-1", "pod: loss uniform egress 1%; duration=10s")
	t0 := time.Unix(1_800_000_000, 0)
	r, err := dp.RuleSet(k, t0)
	if err != nil || !r.FirstApplied().Equal(t0) || r.Announced != 0 {
		t.Fatalf("first: %+v %v", r, err)
	}
	if r, _ := dp.RuleSet(k, t0.Add(time.Hour)); !r.FirstApplied().Equal(t0) {
		t.Fatalf("the first time moved: %v", r.FirstApplied())
	}
	if err := dp.AnnounceRuleSet(k); err != nil {
		t.Fatal(err)
	}
	again, err := Open(dp.PinDir())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if r, _ := again.RuleSet(k, t0.Add(2*time.Hour)); !r.FirstApplied().Equal(t0) || r.Announced != 1 {
		t.Fatalf("after reopen: %+v", r)
	}
	other := NewRuleSetKey("uid-2", "x")
	again.RuleSet(other, t0)
	if err := again.ForgetRuleSets(func(p [16]byte) bool { return p == PodKey("uid-2") }); err != nil {
		t.Fatal(err)
	}
	if r, _ := again.RuleSet(k, t0.Add(3*time.Hour)); !r.FirstApplied().Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("uid-1's record was not forgotten: %+v", r)
	}
	if r, _ := again.RuleSet(other, t0.Add(time.Hour)); !r.FirstApplied().Equal(t0) {
		t.Fatalf("uid-2's record was forgotten")
	}
}
