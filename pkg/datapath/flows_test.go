package datapath

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

func setFlows(t *testing.T, dp *Datapath, dir rules.Direction, p rules.DirectionPolicy) {
	t.Helper()
	cfg, err := ConfigFor(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg.EnableFlows()
	if err := dp.Set(KeyOf(loIfindex, dir), cfg); err != nil {
		t.Fatal(err)
	}
}

func flowsBy(t *testing.T, dp *Datapath) map[string]FlowStats {
	t.Helper()
	fl, err := dp.Flows()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]FlowStats{}
	for _, f := range fl {
		k := f.Key
		out[k.Direction().String()+" "+k.ProtoName()+" "+net.JoinHostPort(k.Src().String(), itoa(k.SrcPort()))+">"+net.JoinHostPort(k.Dst().String(), itoa(k.DstPort()))] = f.Stats
	}
	return out
}

func itoa(v uint16) string { return strconv.Itoa(int(v)) }

func TestFlowsPerFiveTupleV4V6(t *testing.T) {
	dp := openTest(t)
	setFlows(t, dp, rules.Egress, rules.DirectionPolicy{})
	setFlows(t, dp, rules.Ingress, rules.DirectionPolicy{})
	a6, b6 := net.ParseIP("fd00::1"), net.ParseIP("fd00::2")

	for range 3 {
		run(t, dp, rules.Egress, udpPacket(100), nil) // 10.0.0.1:40000 > 10.0.0.2:5201
	}
	run(t, dp, rules.Egress, tcpPacket(1000), nil)                                // TCP v4, ACK
	run(t, dp, rules.Egress, tcpPacket(2896), &skbCtx{GSOSegs: 2, GSOSize: 1448}) // same flow, GSO
	run(t, dp, rules.Ingress, udp6Packet(200, b6, a6, 53, 33000), nil)            // UDP v6
	run(t, dp, rules.Ingress, tcp6Packet(0, b6, a6, 443, 50000, 0x02), nil)       // SYN
	run(t, dp, rules.Ingress, tcp6Packet(500, b6, a6, 443, 50000, 0x18), nil)     // PSH|ACK
	run(t, dp, rules.Ingress, tcp6Packet(0, b6, a6, 443, 50000, 0x11), nil)       // FIN|ACK

	got := flowsBy(t, dp)
	want := map[string]struct {
		packets, bytes uint64
		flags          uint32
	}{
		"egress udp 10.0.0.1:40000>10.0.0.2:5201":   {3, 300, 0},
		"egress tcp 10.0.0.1:40000>10.0.0.2:5201":   {1 + 2, (66 + 1000) + 2*(66+1448), 0x10},
		"ingress udp [fd00::2]:53>[fd00::1]:33000":  {1, 200, 0},
		"ingress tcp [fd00::2]:443>[fd00::1]:50000": {3, 74 + 574 + 74, 0x02 | 0x18 | 0x11},
	}
	if len(got) != len(want) {
		t.Errorf("got %d flows, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("no flow %s (have %v)", k, got)
			continue
		}
		if g.Packets != w.packets || g.Bytes != w.bytes || g.TcpFlags != w.flags {
			t.Errorf("%s: %d packets %d bytes flags %#x, want %d, %d, %#x", k, g.Packets, g.Bytes, g.TcpFlags, w.packets, w.bytes, w.flags)
		}
		first, last, err := dp.Seen(g)
		if err != nil {
			t.Fatal(err)
		}
		if age := time.Since(first); age < 0 || age > 5*time.Second || last.Before(first) {
			t.Errorf("%s: first seen %v ago, last %v; want within the test's seconds", k, age, time.Since(last))
		}
	}
}

func TestFlowsCountDropsAndStayOffUnlessAsked(t *testing.T) {
	dp := openTest(t)
	set(t, dp, rules.Ingress, rules.DirectionPolicy{}) // flows off
	run(t, dp, rules.Ingress, udpPacket(100), nil)
	setFlows(t, dp, rules.Egress, rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: 100}})
	run(t, dp, rules.Egress, udpPacket(100), nil)
	fl, err := dp.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(fl) != 1 || fl[0].Key.Direction() != rules.Egress || fl[0].Stats.Drops != 1 {
		t.Fatalf("flows %+v: want one egress flow with one drop", fl)
	}
	if exp, err := dp.ExpireFlows(time.Hour, nil); err != nil || len(exp) != 0 {
		t.Fatalf("expire(1h) took a fresh flow: %v %v", exp, err)
	}
	exp, err := dp.ExpireFlows(0, nil)
	if err != nil || len(exp) != 1 {
		t.Fatalf("expire: %v %v", exp, err)
	}
	if fl, _ := dp.Flows(); len(fl) != 0 {
		t.Fatalf("flows left after expiry: %v", fl)
	}
}

// TestDeleteIsOneDirectionDeleteInterfaceIsAll: deleting one direction
// leaves the other direction's rule and the interface's flows and pod name
// alone (whatever the order of the calls); DeleteInterface removes them all.
func TestDeleteIsOneDirectionDeleteInterfaceIsAll(t *testing.T) {
	dp := openTest(t)
	setFlows(t, dp, rules.Egress, rules.DirectionPolicy{})
	setFlows(t, dp, rules.Ingress, rules.DirectionPolicy{})
	if err := dp.SetPodName(loIfindex, "ns/p"); err != nil {
		t.Fatal(err)
	}
	run(t, dp, rules.Egress, udpPacket(100), nil)
	if err := dp.Delete(KeyOf(loIfindex, rules.Ingress)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := dp.Lookup(KeyOf(loIfindex, rules.Egress)); !ok {
		t.Fatal("deleting ingress removed the egress rule")
	}
	if _, ok, _ := dp.Lookup(KeyOf(loIfindex, rules.Ingress)); ok {
		t.Fatal("the ingress rule is still there")
	}
	if n := len(flowsBy(t, dp)); n != 1 {
		t.Fatalf("%d flows after deleting one direction, want the egress flow kept", n)
	}
	if names, _ := dp.PodNames(); names[loIfindex] != "ns/p" {
		t.Fatalf("pod name %q after deleting one direction, want kept", names[loIfindex])
	}
	if err := dp.DeleteInterface(loIfindex); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := dp.Lookup(KeyOf(loIfindex, rules.Egress)); ok {
		t.Fatal("DeleteInterface left the egress rule")
	}
	if n := len(flowsBy(t, dp)); n != 0 {
		t.Fatalf("DeleteInterface left %d flows", n)
	}
	if names, _ := dp.PodNames(); names[loIfindex] != "" {
		t.Fatalf("DeleteInterface left the pod name %q", names[loIfindex])
	}
}
