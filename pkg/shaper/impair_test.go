package shaper

import (
	"io"
	"math"
	"net"
	"strconv"
	"testing"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
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

// within3Sigma checks a binomial count.
func within3Sigma(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	sigma := math.Sqrt(float64(n) * p * (1 - p))
	t.Logf("%s: %d of %d (model %.0f ± %.0f)", what, got, n, float64(n)*p, 3*sigma)
	if math.Abs(float64(got)-float64(n)*p) > 3*sigma {
		t.Errorf("%s: %d of %d, want %.0f ± %.0f (3σ)", what, got, n, float64(n)*p, 3*sigma)
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
	within3Sigma(t, "pod sends to the targeted port: lost", n-up.Received, n, 0.30)
	if r := stream(t, f.a, f.b, clean, n); r.Received != n {
		t.Errorf("pod sends to another port: %d of %d arrived, want all", r.Received, n)
	}
	down := stream(t, f.b, f.a, lossy, n)
	within3Sigma(t, "pod receives on the targeted port: lost", n-down.Received, n, 0.30)
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
