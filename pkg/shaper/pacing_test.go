package shaper

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
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

// prober stands for the kubelet's probes and a metrics scraper: every
// period, a fresh TCP connection from the node to the pod carries a small
// request and a response of respBytes from the pod, then closes. It runs
// until stop is closed and returns how many probes completed.
func prober(t *testing.T, f *fixture, pod *netlab.Pod, period time.Duration, respBytes int, stop <-chan struct{}) <-chan int {
	t.Helper()
	var ln net.Listener
	if err := podnet.Do(pod.Netns, func() (err error) { ln, err = net.Listen("tcp4", pod.IP.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	resp := make([]byte, respBytes)
	go func() { // the pod's server: answers each request, then closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req := make([]byte, 64)
				if _, err := c.Read(req); err == nil {
					c.Write(resp)
				}
			}()
		}
	}()
	done := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(period)
		defer tick.Stop()
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				done <- n
				return
			case <-tick.C:
			}
			var c net.Conn
			if podnet.Do("/var/run/netns/"+f.lab.Node, func() (err error) {
				c, err = net.DialTimeout("tcp4", ln.Addr().String(), time.Second)
				return err
			}) != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte("GET /healthz\n")); err == nil {
				got := 0
				for {
					k, err := c.Read(buf)
					got += k
					if err != nil {
						break
					}
				}
				if got == respBytes {
					n++
				}
			}
			c.Close()
		}
	}()
	return done
}

// TestSocketPacingWithProbes: short connections to the pod (probes,
// scrapes, keep-alive requests: a real node has them every second) must
// not take a share of the pod's rate from its bulk flow. Before shares
// went by need, every probe counted as an active flow for one or two
// 134 ms epochs and halved the bulk flow's rate meanwhile: with a probe
// every 1 s the real cluster measured goodput 0.85-0.86 of the payload
// target (0.93-0.96 without probes); with one every 100 ms, as here, there
// is a probe in every epoch and the bulk flow ran at about half the
// target (measured on the old code: see the commit). The bound, 0.90 of
// the payload target, sits midway between that and a correct build
// (0.95-1.00 alone, the same here): a correct build misses it only when
// starved of CPU, which only ever lowers the rate, so each run retries up
// to 3 times; at ≤ 5 % per try (the 0.95 bound of TestSocketPacingInEffect
// holds in CI on this machine) a false failure is ≤ 0.05³ ≈ 1/8000.
// The policer must still not drop: ≤ 40 bandwidth drops and retransmitted
// segments per 3 s try (~10,000 segments; as TestSocketPacingInEffect).
func TestSocketPacingWithProbes(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.iface(t, f.b)
	const target = 40_000_000
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: target, Mode: rules.ModeDrop}
	f.apply(t, ifc, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	key := datapath.KeyOf(ifc.Index, rules.Egress)
	payload := float64(target) * 1448 / 1514
	for try := 1; try <= 3; try++ {
		before, _, _ := f.dp.Counters(key)
		r0 := tcpRetrans(t, f.a)
		stop := make(chan struct{})
		probes := prober(t, f, f.a, 100*time.Millisecond, 4<<10, stop)
		got, err := netlab.TCPRate(f.a, f.b, 3*time.Second)
		close(stop)
		n := <-probes
		if err != nil {
			t.Fatal(err)
		}
		after, _, _ := f.dp.Counters(key)
		drops := after.DropPackets[0] - before.DropPackets[0]
		retr := tcpRetrans(t, f.a) - r0
		t.Logf("try %d: bulk flow %.2f Mbit/s payload (%.3f of the target's payload) beside %d probes; %d bandwidth drops, %d retransmissions of %d packets",
			try, got/1e6, got/payload, n, drops, retr, after.Packets-before.Packets)
		if n < 15 {
			t.Fatalf("only %d probes answered in 3 s (want ~30): the test did not test", n)
		}
		if drops > 40 || retr > 40 {
			t.Fatalf("pacing beside probes: %d bandwidth drops, %d retransmitted segments (want ≤ 40 each)", drops, retr)
		}
		if got > payload*1.03 {
			t.Fatalf("bulk flow at %.3f of the target's payload: above the rule", got/payload)
		}
		if got >= payload*0.90 {
			return
		}
	}
	t.Errorf("the probes took the bulk flow's share: below 0.90 of the target's payload in 3 tries")
}

// TestSocketPacingSharedByFlows: several bulk flows of one pod share its
// rule: each is heavy from its first ACK (its send buffer is full), the
// shares drop to rate/flows, the wire rate the policer passes while all
// run stays at the target and the policer hardly drops.
//   - 40M over 4 flows: a flow counted for nothing would pace all four at
//     a third of the rule (4/3 of it: thousands of drops in 3 s); a flow
//     counted twice would lower the wire to 0.8.
//   - 10M over 8 flows (1.25 Mbit/s each): without the congestion-window
//     clamp (bpf/sockpace.c, clamp_cwnd) each flow sends a 64 KB TSO skb
//     every 420 ms, flows fall out of the heavy count for whole epochs and
//     the bursts meet in the policer: measured 1,963 drops of 7,094
//     segments in one try (and 34-44 % retransmitted in make bench-pacing).
//   - the first second: what the sockets send in it (offered to the
//     policer, passed or dropped: what a wire shows behind a full bucket).
//     Without the start debt (bpf/sockpace.c) each flow starts one
//     initial window (10 unpaced segments) ahead of its share: 10M over 8
//     flows measured 1.133 of the target in 4 of 4 tries (40M/4: 1.014).
//
// Measured with the clamp (load 5-12): wire 1.001 and 0-5 drops in both.
// With light flows at an equal share and the start debt (load 0.4-0.6):
// first second 0.999-1.002 (40M/4) and 0.986-0.994 (10M/8) in 10 tries
// each, wire 0.998-1.002, 0 drops.
// Bounds: wire ≥ 0.93 of the target from 1 s to 2.5 s (a double count
// gives ≤ 0.89), first second ≤ 1.05 and ≤ 200 drops and retransmissions,
// with up to 3 tries (a CPU stall only lowers the rates; a wrong count or
// an unpaid start fails every try): a false failure needs three tries
// each 40x the worst drop count seen, or three stalls of > 7 % of 1.5 s,
// or three first seconds 0.048 above the highest of 20 (whose whole
// spread is 0.016; the window opens before the flows connect, so it errs
// low), well under 1/1000 per CI run.
func TestSocketPacingSharedByFlows(t *testing.T) {
	for _, c := range []struct {
		target uint64
		flows  int
	}{{40_000_000, 4}, {10_000_000, 8}} {
		t.Run(fmt.Sprintf("%dM/%d", c.target/1_000_000, c.flows), func(t *testing.T) { sharedByFlows(t, c.target, c.flows) })
	}
}

func sharedByFlows(t *testing.T, target uint64, flows int) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.iface(t, f.b)
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: target, Mode: rules.ModeDrop}
	f.apply(t, ifc, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	key := datapath.KeyOf(ifc.Index, rules.Egress)
	passed := func(c datapath.Counters) float64 {
		b := c.Bytes
		for _, d := range c.DropBytes {
			b -= d
		}
		return float64(b)
	}
	for try := 1; try <= 3; try++ {
		before, _, _ := f.dp.Counters(key)
		r0 := tcpRetrans(t, f.a)
		got := make(chan float64, flows)
		start := time.Now()
		for range flows {
			go func() {
				r, err := netlab.TCPRate(f.a, f.b, 3*time.Second)
				if err != nil {
					t.Error(err)
				}
				got <- r
			}()
		}
		// The wire rate the policer passed while every flow runs: from
		// 1 s (all started, shares settled) to 2.5 s (none done).
		time.Sleep(time.Until(start.Add(time.Second)))
		c1, _, _ := f.dp.Counters(key)
		t1 := time.Now()
		// What the sockets sent in their first second (offered: passed
		// or dropped), as a wire would show it behind a policer whose
		// bucket is full (a rule older than the flows).
		first := float64(c1.Bytes-before.Bytes) * 8 / t1.Sub(start).Seconds() / float64(target)
		time.Sleep(time.Until(start.Add(2500 * time.Millisecond)))
		c2, _, _ := f.dp.Counters(key)
		wire := (passed(c2) - passed(c1)) * 8 / time.Since(t1).Seconds() / float64(target)
		var each []string
		for range flows {
			each = append(each, fmt.Sprintf("%.2f", <-got/1e6))
		}
		after, _, _ := f.dp.Counters(key)
		drops := after.DropPackets[0] - before.DropPackets[0]
		retr := tcpRetrans(t, f.a) - r0
		t.Logf("try %d: %d flows: %s Mbit/s goodput; first second %.3f of the target; wire %.3f of the target from 1 s to 2.5 s; %d bandwidth drops, %d retransmissions of %d packets",
			try, flows, strings.Join(each, " "), first, wire, drops, retr, after.Packets-before.Packets)
		if wire >= 0.93 && first <= 1.05 && drops <= 200 && retr <= 200 {
			return
		}
	}
	t.Errorf("%d flows did not share the rule in 3 tries: wire below 0.93 of the target, first second above 1.05 or > 200 drops/retransmissions", flows)
}

// TestSocketPacingAcrossNodeGrowth: an agent sized for a small node paces
// pod A; the node's pod capacity grows and a new agent starts (a new
// datapath sized for 250 pods, a new shaper re-applying the pod, as the
// reconciler does at start). Its socket-pacing maps are sized for 250
// pods, and a flow that runs across the restart stays paced throughout:
// the maps are replaced with their entries and the link switched in
// place, so the new program finds the rule (an empty rules map would lift
// the socket's pacing at its next ACK: ~1 Gbit/s here for the rest of the
// flow, an average far above the bound).
func TestSocketPacingAcrossNodeGrowth(t *testing.T) {
	lab := netlab.New(t, "h12m")
	a, b := lab.AddPod("a"), lab.AddPod("b")
	dir := netlab.PinDir(t, "h12m")
	t.Cleanup(func() { datapath.RemovePins(dir) })
	open := func(pods int) *fixture {
		dp, err := datapath.OpenWith(dir, datapath.Options{Entries: datapath.EntriesForPods(pods), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		sh := New(dp)
		t.Cleanup(func() { sh.ClosePacing(); dp.Close() })
		return &fixture{lab: lab, dp: dp, sh: sh, a: a, b: b}
	}
	const target = 20_000_000
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: target, Mode: rules.ModeDrop}
	f := open(16)
	ifc := f.iface(t, a)
	f.iface(t, b)
	f.apply(t, ifc, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	sizes := func() map[string]uint32 {
		out := map[string]uint32{}
		for _, n := range []string{"ksp_rules", "ksp_node_netns", "ksp_groups"} {
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, n), nil)
			if err != nil {
				t.Fatal(err)
			}
			out[n] = m.MaxEntries()
			m.Close()
		}
		return out
	}
	s16, s250 := sockpace.SizesForPods(16), sockpace.SizesForPods(250)
	if got, want := sizes(), map[string]uint32{"ksp_rules": uint32(s16.Rules), "ksp_node_netns": uint32(s16.Netns), "ksp_groups": uint32(s16.Groups)}; !maps.Equal(got, want) {
		t.Errorf("maps of a 16-pod node: %v, want %v", got, want)
	}

	done := make(chan float64, 1)
	go func() {
		r, _ := netlab.TCPRate(a, b, 3*time.Second)
		done <- r
	}()
	time.Sleep(time.Second)
	g := open(250) // the restarted agent, on a node now sized for 250 pods
	// Its first pod is not paced: the pinned maps are replaced all the
	// same (an older agent's maps go at start, not at the next paced pod).
	g.apply(t, g.iface(t, b), rules.Policy{})
	if got, want := sizes(), map[string]uint32{"ksp_rules": uint32(s250.Rules), "ksp_node_netns": uint32(s250.Netns), "ksp_groups": uint32(s250.Groups)}; !maps.Equal(got, want) {
		t.Errorf("maps after the node grew to 250 pods and an unpaced pod was applied: %v, want %v", got, want)
	}
	g.apply(t, ifc, pol)
	r := <-done
	if err := g.sh.PacingError(); err != nil {
		t.Fatalf("pacing after the restart: %v", err)
	}
	payload := float64(target) * 1448 / 1514
	t.Logf("one flow across the restart: %.2f Mbit/s payload (%.3f of the target's)", r/1e6, r/payload)
	if r > payload*1.1 {
		t.Errorf("the flow ran at %.2f Mbit/s across the restart, want ≤ %.2f: unpaced for a while", r/1e6, payload*1.1/1e6)
	}
	st, err := sockpace.Read(dir)
	if err != nil || len(st.Of(ifc.Index)) != 1 || st.Stats.SetErrors != 0 {
		t.Errorf("pacing state after the restart: %+v, %v", st, err)
	}
}

// TestSocketPacingMapsGrowWhenFull: on a node whose socket-pacing maps are
// full (sized for 16 pods: 64 addresses), the next paced pod grows them
// while the agent runs — no restart, every entry kept — and is paced.
// Before, its rule went to the policer alone with "key too big for map".
func TestSocketPacingMapsGrowWhenFull(t *testing.T) {
	lab := netlab.New(t, "h12m")
	a, b := lab.AddPod("a"), lab.AddPod("b")
	dir := netlab.PinDir(t, "h12m")
	t.Cleanup(func() { datapath.RemovePins(dir) })
	dp, err := datapath.OpenWith(dir, datapath.Options{Entries: datapath.EntriesForPods(16), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	sh := New(dp)
	t.Cleanup(func() { sh.ClosePacing(); dp.Close() })
	f := &fixture{lab: lab, dp: dp, sh: sh, a: a, b: b}
	const target = 10_000_000
	pol := rules.Policy{}
	pol[rules.Egress].Bandwidth = &rules.Bandwidth{RateBitsPerSec: target, Mode: rules.ModeDrop}
	ia, ib := f.iface(t, a), f.iface(t, b)
	f.apply(t, ia, pol)
	if err := f.sh.PacingError(); err != nil {
		t.Skipf("socket pacing unavailable on this kernel: %v", err)
	}
	// Other pods' addresses fill ksp_rules to the last entry.
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "ksp_rules"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	size := int(m.MaxEntries())
	key := func(i int) [16]byte {
		return [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 77, 14: byte(i >> 8), 15: byte(i)}
	}
	val := make([]byte, 32)
	val[25] = 0x50 // ifindex (bytes 24-27) 0x5000: no interface of this test
	for i := 1; i < size; i++ {
		if err := m.Put(key(i), val); err != nil {
			t.Fatalf("filling ksp_rules, entry %d of %d: %v", i+1, size, err)
		}
	}
	f.apply(t, ib, pol)
	if err := f.sh.LastPodPacingError(); err != nil {
		t.Fatalf("pod B on full maps: %v", err)
	}
	st, err := sockpace.Read(dir)
	if err != nil || len(st.Entries) != size+1 || len(st.Of(ia.Index)) != 1 || len(st.Of(ib.Index)) != 1 {
		t.Fatalf("after growing: %d entries (want %d: the %d kept and pod B's), A %v, B %v, %v", len(st.Entries), size+1, size, st.Of(ia.Index), st.Of(ib.Index), err)
	}
	grown, err := ebpf.LoadPinnedMap(filepath.Join(dir, "ksp_rules"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer grown.Close()
	if int(grown.MaxEntries()) <= size {
		t.Errorf("ksp_rules holds %d entries, was %d: not grown", grown.MaxEntries(), size)
	}
	payload := float64(target) * 1448 / 1514
	if got := rate(t, b, a); got > payload*1.05 {
		t.Errorf("pod B after the maps grew: %.2f Mbit/s, want ≤ %.2f (paced)", got/1e6, payload*1.05/1e6)
	}
}
