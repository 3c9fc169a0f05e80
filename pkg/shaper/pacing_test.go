package shaper

import (
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/sockpace"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// tcpRetrans is the netns's TCP RetransSegs counter.
func tcpRetrans(t *testing.T, p *netlab.Pod) uint64 {
	t.Helper()
	v, err := netlab.SNMP(p, "Tcp", "RetransSegs")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSocketPacingInEffect fails when cooperative pacing is not in effect:
// a drop-mode rule at 40 Mbit/s, a TCP flow from the pod for 2 s. Paced,
// TCP sends at the limit by itself: no bandwidth drops, no retransmissions,
// wire rate within a few % of the target. Unpaced (pacing=off, measured
// here: thousands of bandwidth drops and retransmissions per second, as on
// the first row) the same test fails on both counts. The bounds
// leave room for a stray drop: 40 drops out of ~6,600 segments sent.
func TestSocketPacingInEffect(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.iface(t, f.b) // the other pod is on this node too
	const target = 40_000_000
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: target, Mode: rules.ModeDrop}
	f.apply(t, ifc, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	st, err := sockpace.Read(f.dp.PinDir())
	if err != nil || !st.Attached || len(st.Of(ifc.Index)) != 1 {
		t.Fatalf("pacing state after apply: %+v, %v", st, err)
	}
	key := datapath.KeyOf(ifc.Index, rules.Egress)
	before, _, _ := f.dp.Counters(key)
	r0 := tcpRetrans(t, f.a)
	got := rate(t, f.a, f.b)
	after, _, _ := f.dp.Counters(key)
	retr := tcpRetrans(t, f.a) - r0
	drops := after.DropPackets[0] - before.DropPackets[0]
	sent := after.Packets - before.Packets
	payload := float64(target) * 1448 / 1514
	t.Logf("paced: %.2f Mbit/s payload (%.3f of the target's payload), %d bandwidth drops and %d retransmissions of %d packets", got/1e6, got/payload, drops, retr, sent)
	if drops > 40 || retr > 40 {
		t.Errorf("pacing not in effect: %d bandwidth drops, %d retransmitted segments in 2 s at the limit (want ≤ 40 each)", drops, retr)
	}
	if got < payload*0.95 || got > payload*1.03 {
		t.Errorf("paced rate %.2f Mbit/s, want %.2f -5 %%/+3 %%", got/1e6, payload/1e6)
	}

	// The rule removed: new sockets are not paced (nothing limits them).
	f.apply(t, ifc, rules.Policy{})
	if st, _ := sockpace.Read(f.dp.PinDir()); len(st.Of(ifc.Index)) != 0 {
		t.Fatalf("pacing entries left after the rule went: %+v", st.Of(ifc.Index))
	}
	if got := rate(t, f.a, f.b); got < 4*target {
		t.Errorf("after the rule went: %.2f Mbit/s, still paced (want ≫ %.0f Mbit/s)", got/1e6, target/1e6)
	}
}

// TestSocketPacingExistingSocket: a socket paced while the rule stands has
// its pacing lifted at its next ACK once the rule is removed.
func TestSocketPacingLiftedOnRemoval(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: 20_000_000, Mode: rules.ModeDrop}
	f.apply(t, ifc, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	done := make(chan float64, 1)
	go func() {
		r, _ := netlab.TCPRate(f.a, f.b, 3*time.Second)
		done <- r
	}()
	time.Sleep(time.Second)
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
	r := <-done
	// 1 s at 20M then 2 s unlimited: far above 20M on average.
	t.Logf("one socket, rule removed after 1 s of 3: %.1f Mbit/s average", r/1e6)
	if r < 100e6 {
		t.Errorf("the socket stayed paced after its rule went: %.1f Mbit/s", r/1e6)
	}
	st, _ := sockpace.Read(f.dp.PinDir())
	if st.Stats.Lifted == 0 {
		t.Errorf("no socket's pacing was lifted: %+v", st.Stats)
	}
}
