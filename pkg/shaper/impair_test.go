package shaper

import (
	"io"
	"math"
	"net"
	"strconv"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/bounds"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

func parsePolicy(t *testing.T, ann map[string]string) rules.Policy {
	t.Helper()
	p, errs := rules.ParseAnnotations(ann)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	return p
}

func stream(t *testing.T, from, to *netlab.Pod, port, n int) netlab.UDPResult {
	t.Helper()
	r, err := netlab.UDPStream(from, to, port, n, 200)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// withinBinomial checks a binomial count against the interval sized for
// the whole CI run (tests/bounds).
func withinBinomial(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	lo, hi := bounds.Binomial(int64(n), p)
	t.Logf("%s: %d of %d (model %.0f, interval [%d, %d])", what, got, n, float64(n)*p, lo, hi)
	if int64(got) < lo || int64(got) > hi {
		t.Errorf("%s: %d of %d, want within [%d, %d] (p=%g; tests/bounds)", what, got, n, lo, hi, p)
	}
}

// TestPortTargetedLossRealTraffic: a loss limited to one UDP port drops
// that port's datagrams at its rate and no others, in both directions of
// the pod (the port may be either end's).
func TestPortTargetedLossRealTraffic(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	const n, lossy, clean = 5000, 7001, 7002
	pol := parsePolicy(t, map[string]string{"kubeshaper.io/loss": "uniform both 30% port=7001 proto=udp"})
	f.apply(t, ifc, pol)

	up := stream(t, f.a, f.b, lossy, n)
	withinBinomial(t, "pod sends to the targeted port: lost", n-up.Received, n, 0.30)
	if r := stream(t, f.a, f.b, clean, n); r.Received != n {
		t.Errorf("pod sends to another port: %d of %d arrived, want all", r.Received, n)
	}
	down := stream(t, f.b, f.a, lossy, n)
	withinBinomial(t, "pod receives on the targeted port: lost", n-down.Received, n, 0.30)
	if r := stream(t, f.b, f.a, clean, n); r.Received != n {
		t.Errorf("pod receives on another port: %d of %d arrived, want all", r.Received, n)
	}
	// TCP to the targeted port is not UDP: untouched (a loss would show
	// as retransmissions; the counter says it directly).
	before := f.counters(t, ifc, rules.Egress)
	tcpTransfer(t, f.a, f.b, lossy, 4<<20)
	after := f.counters(t, ifc, rules.Egress)
	if got := after.DropPackets[datapath.ReasonLoss] - before.DropPackets[datapath.ReasonLoss]; got != 0 {
		t.Errorf("TCP lost %d packets to a UDP-only rule", got)
	}
	// The counters agree with the receivers.
	eg, in := f.counters(t, ifc, rules.Egress), f.counters(t, ifc, rules.Ingress)
	if int(eg.DropPackets[datapath.ReasonLoss]) != n-up.Received || int(in.DropPackets[datapath.ReasonLoss]) != n-down.Received {
		t.Errorf("loss counters egress %d ingress %d, receivers missed %d and %d", eg.DropPackets[datapath.ReasonLoss], in.DropPackets[datapath.ReasonLoss], n-up.Received, n-down.Received)
	}
}

func (f *fixture) counters(t *testing.T, ifc Interface, d rules.Direction) datapath.Counters {
	t.Helper()
	c, ok, err := f.dp.Counters(datapath.KeyOf(ifc.Index, d))
	if err != nil || !ok {
		t.Fatalf("counters of %s %s: ok=%v err=%v", ifc.Name, d, ok, err)
	}
	return c
}

// tcpTransfer sends size bytes over TCP from one pod to another's port.
func tcpTransfer(t *testing.T, from, to *netlab.Pod, port, size int) {
	t.Helper()
	var ln net.Listener
	if err := podnet.Do(to.Netns, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(to.IP.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	var c net.Conn
	if err := podnet.Do(from.Netns, func() (err error) {
		c, err = net.Dial("tcp4", net.JoinHostPort(to.IP.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := <-got; n != int64(size) {
		t.Fatalf("TCP transfer: %d of %d bytes", n, size)
	}
}

// TestGilbertElliottRealTraffic: 100,000 UDP datagrams through a Gilbert
// loss on pod egress; the loss rate and the mean length of runs of
// consecutive missing sequence numbers match the model within the bounds of tests/bounds. The rule
// is targeted at the stream's port: untargeted, it would also drop the
// pod's neighbour discovery and router solicitations, which the receiver
// never counts.
func TestGilbertElliottRealTraffic(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.apply(t, ifc, parsePolicy(t, map[string]string{"kubeshaper.io/loss": "gilbert egress p=1% r=25% h=0% k=100% port=7003 proto=udp"}))
	const n = 100000
	bufErrs0, _ := netlab.SNMP(f.b, "Udp", "RcvbufErrors")
	r := stream(t, f.a, f.b, 7003, n)
	if e, _ := netlab.SNMP(f.b, "Udp", "RcvbufErrors"); e != bufErrs0 {
		t.Fatalf("the receiver's socket buffer overflowed (%d): the count is not the rule's", e-bufErrs0)
	}
	lost, bursts := 0, 0
	for i, c := range r.Seen {
		if c == 0 {
			lost++
			if i == 0 || r.Seen[i-1] != 0 {
				bursts++
			}
		}
	}
	p, rr := 0.01, 0.25
	mu := p / (p + rr)
	lambda := 1 - p - rr
	sigma := math.Sqrt(n * mu * (1 - mu) * (1 + lambda) / (1 - lambda))
	mean := float64(lost) / float64(bursts)
	sdMean := math.Sqrt((1 - rr) / (rr * rr) / float64(bursts))
	t.Logf("lost %d of %d (model %.0f ± %.0f), %d bursts, mean burst %.3f (model %.3f ± %.3f)", lost, n, n*mu, bounds.Z*sigma, bursts, mean, 1/rr, bounds.Z*sdMean)
	if lo, hi := bounds.Normal(n*mu, sigma); float64(lost) < lo || float64(lost) > hi {
		t.Errorf("lost %d, want %.0f ± %.0f (%.1fσ, tests/bounds)", lost, n*mu, hi-n*mu, bounds.Z)
	}
	if lo, hi := bounds.Normal(1/rr, sdMean); mean < lo || mean > hi {
		t.Errorf("mean burst %.3f, want %.3f ± %.3f (%.1fσ, tests/bounds)", mean, 1/rr, hi-1/rr, bounds.Z)
	}
	if c := f.counters(t, ifc, rules.Egress); int(c.DropPackets[datapath.ReasonLoss]) != lost {
		t.Errorf("loss counter %d, receiver missed %d", c.DropPackets[datapath.ReasonLoss], lost)
	}
}

// TestDuplicateRealTraffic: both directions (UDP only, so that ARP and
// neighbour discovery do not blur the counts; the clone re-enters the hook
// it was made at: tc ingress through the backlog, tagged by a mark bit;
// tc egress synchronously, under a per-CPU guard): receivers get each
// duplicated datagram twice, never thrice, at the rule's rate.
func TestDuplicateRealTraffic(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	f.apply(t, ifc, parsePolicy(t, map[string]string{"kubeshaper.io/duplicate": "both 5% proto=udp"}))
	const n = 20000
	for _, c := range []struct {
		dir      rules.Direction
		from, to *netlab.Pod
	}{{rules.Egress, f.a, f.b}, {rules.Ingress, f.b, f.a}} {
		before := f.counters(t, ifc, c.dir)
		r := stream(t, c.from, c.to, 7004, n)
		after := f.counters(t, ifc, c.dir)
		sent := int(after.Duplicated - before.Duplicated)
		withinBinomial(t, c.dir.String()+": duplicates sent", sent, n, 0.05)
		for seq, k := range r.Seen {
			if k > 2 {
				t.Fatalf("%s: datagram %d arrived %d times: a clone was duplicated again", c.dir, seq, k)
			}
		}
		// Where the stack itself dropped nothing (a slow guest's backlog
		// may), every copy arrived: the receiver saw what was sent.
		if r.Received == n && r.Duplicates != sent {
			t.Errorf("%s: sent %d duplicates, the receiver saw %d", c.dir, sent, r.Duplicates)
		}
		if r.Received != n {
			t.Logf("%s: only %d of %d arrived (the stack dropped some: not kubeshaper, which drops nothing here)", c.dir, r.Received, n)
			if after.DropPackets != before.DropPackets {
				t.Errorf("%s: kubeshaper dropped packets under a duplicate rule", c.dir)
			}
		}
		if r.Duplicates > sent {
			t.Errorf("%s: the receiver saw %d duplicates, more than the %d sent", c.dir, r.Duplicates, sent)
		}
	}
	// The mark bit never leaks: no clone with it reached the receiver's
	// stack (it would have been duplicated again or counted twice above),
	// and the rule's removal leaves no state behind.
	f.inNode(t, func() error { return f.sh.Clear(ifc) })
}

// TestCorruptRealTraffic: corrupted datagrams fail the receiver's UDP
// checksum (InCsumErrors) at the rule's rate, and none reaches the
// application altered. Pod egress: the shaper turns TX checksum offload
// off on the pod's eth0 so that its packets carry complete checksums.
// Pod ingress from a sender on this node with offload on: the packets are
// CHECKSUM_PARTIAL, which no receiver here would check, so they are left
// intact (corrupt_skipped); from a sender whose checksums are complete (as
// traffic from another node, after the NIC), they are corrupted.
func TestCorruptRealTraffic(t *testing.T) {
	f := setup(t)
	ifc := f.iface(t, f.a)
	const n, pct = 20000, 0.05
	f.apply(t, ifc, parsePolicy(t, map[string]string{"kubeshaper.io/corrupt": "both 5%"}))
	txOn := func(p *netlab.Pod) bool {
		var on bool
		if err := podnet.Do(p.Netns, func() (err error) { on, err = attach.TxChecksum("eth0"); return err }); err != nil {
			t.Fatal(err)
		}
		return on
	}
	if txOn(f.a) {
		t.Fatal("TX checksum offload still on on the pod's eth0 under a corrupt egress rule")
	}
	check := func(what string, from, to *netlab.Pod, dir rules.Direction, want float64) {
		t.Helper()
		csum0, _ := netlab.SNMP(to, "Udp", "InCsumErrors")
		before := f.counters(t, ifc, dir)
		r := stream(t, from, to, 7005, n)
		csum, _ := netlab.SNMP(to, "Udp", "InCsumErrors")
		after := f.counters(t, ifc, dir)
		bad := int(csum - csum0)
		withinBinomial(t, what+": checksum failures", bad, n, want)
		if r.Mangled != 0 {
			t.Errorf("%s: %d corrupted datagrams reached the application", what, r.Mangled)
		}
		if r.Received+bad != n {
			t.Errorf("%s: %d arrived + %d failed checksums != %d sent", what, r.Received, bad, n)
		}
		if int(after.Corrupted-before.Corrupted) != bad {
			t.Errorf("%s: counted %d corrupted, receiver saw %d checksum failures", what, after.Corrupted-before.Corrupted, bad)
		}
		if want == 0 {
			withinBinomial(t, what+": skipped (partial checksums)", int(after.CorruptSkipped-before.CorruptSkipped), n, pct)
		}
	}
	check("egress", f.a, f.b, rules.Egress, pct)
	check("ingress from an offloading sender", f.b, f.a, rules.Ingress, 0)
	if err := podnet.Do(f.b.Netns, func() error { return attach.SetTxChecksum("eth0", false) }); err != nil {
		t.Fatal(err)
	}
	check("ingress, complete checksums", f.b, f.a, rules.Ingress, pct)

	// The rule's removal gives the pod its offload back.
	f.apply(t, ifc, rules.Policy{})
	if !txOn(f.a) {
		t.Error("TX checksum offload not restored after the corrupt rule went")
	}
}
