package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// lossy reports whether the pod's egress has a loss rule.
func lossy(w *agentenv.World, p *netlab.Pod) bool {
	c, ok := w.Rule(p, rules.Egress)
	return ok && c.LossProbability() > 0
}

// watchRule polls (every 10 ms) until the pod's egress loss rule has
// appeared and then gone, and returns both moments.
func watchRule(t *testing.T, w *agentenv.World, p *netlab.Pod, timeout time.Duration) (appeared, gone time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		on := lossy(w, p)
		now := time.Now()
		if on && appeared.IsZero() {
			appeared = now
		}
		if !on && !appeared.IsZero() {
			return appeared, now
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: rule appeared at %v and did not end within %v", p.Name, appeared, timeout)
	return
}

// TestDurationEndsOnTime: kubeshaper.io/duration ends the rules of the
// object it is on that long after they were first applied, within 1 s,
// with an Expired Event; the clock survives an agent restart (pinned), so
// the restarted agent ends the rule at the same time, not 10 s after it
// started; a rule whose time ran out while no agent ran is removed when
// the next one starts, and its end reported once.
func TestDurationEndsOnTime(t *testing.T) {
	w := newWorld(t)
	a, b, c := w.Lab.AddPod("a"), w.Lab.AddPod("b"), w.Lab.AddPod("c")
	ann := func(d string) map[string]string {
		return map[string]string{"kubeshaper.io/loss": "uniform egress 100%", "kubeshaper.io/duration": d}
	}
	w.Pod(a, "pa", nil, ann("10s"))
	ag := w.StartAgent(keepRules)

	appeared, gone := watchRule(t, w, a, 20*time.Second)
	took := gone.Sub(appeared)
	t.Logf("10s duration: rule on for %v", took)
	if took < 9*time.Second || took > 11*time.Second {
		t.Errorf("10 s duration lasted %v, want 10 s ± 1 s", took)
	}
	w.Eventually(5*time.Second, "Expired event on pa", func() (bool, string) {
		ev := w.Events("pa", "Expired")
		return len(ev) == 1, ""
	})
	if msg := w.Events("pa", "Expired")[0].Message; !strings.Contains(msg, "duration=10s") || !strings.Contains(msg, "loss uniform 100%") {
		t.Errorf("Expired event: %q", msg)
	}

	// Across a restart: pb's 10 s clock starts with this agent; the agent
	// stops 3 s in, keeping rules; the next one starts 2 s later.
	w.Pod(b, "pb", nil, ann("10s"))
	w.Pod(c, "pc", nil, ann("4s"))
	var bOn, cOn time.Time
	w.Eventually(10*time.Second, "pb and pc shaped", func() (bool, string) {
		now := time.Now()
		if bOn.IsZero() && lossy(w, b) {
			bOn = now
		}
		if cOn.IsZero() && lossy(w, c) {
			cOn = now
		}
		return !bOn.IsZero() && !cOn.IsZero(), ""
	})
	time.Sleep(3*time.Second - time.Since(bOn))
	ag.Stop(t)
	time.Sleep(2 * time.Second)
	if !lossy(w, b) || !lossy(w, c) {
		t.Fatal("rules did not stay while no agent ran (--cleanup-on-exit=false)")
	}
	// pc's 4 s run out while no agent runs.
	time.Sleep(time.Until(cOn.Add(4*time.Second + 500*time.Millisecond)))
	restart := time.Now()
	ag = w.StartAgent(keepRules)
	ready := time.Now()
	if lossy(w, c) {
		t.Errorf("pc's rule outlived its 4 s while the agent was down and after it restarted")
	}
	t.Logf("restarted agent ready in %v", ready.Sub(restart))
	_, gone = watchRule(t, w, b, 20*time.Second)
	took = gone.Sub(bOn)
	t.Logf("10s duration across a restart: rule on for %v", took)
	if took < 9*time.Second || took > 11*time.Second {
		t.Errorf("10 s duration across a restart lasted %v, want 10 s ± 1 s", took)
	}
	w.Eventually(5*time.Second, "one Expired event each on pb and pc", func() (bool, string) {
		return len(w.Events("pb", "Expired")) == 1 && len(w.Events("pc", "Expired")) == 1, ""
	})

	// Another restart does not report the ends again, nor bring the rules
	// back.
	ag.Stop(t)
	w.StartAgent(keepRules)
	time.Sleep(time.Second)
	if lossy(w, a) || lossy(w, b) || lossy(w, c) {
		t.Error("an expired rule came back after a restart")
	}
	if n := len(w.Events("pb", "Expired")) + len(w.Events("pc", "Expired")) + len(w.Events("pa", "Expired")); n != 3 {
		t.Errorf("%d Expired events after another restart, want 3", n)
	}

	// A changed rule is a new rule set: its clock starts anew.
	w.Annotate("pod", "pa", map[string]any{"kubeshaper.io/loss": "uniform egress 50%"})
	w.Eventually(10*time.Second, "pa's new rule", func() (bool, string) { return lossy(w, a), "" })
}

// TestUntilInThePast: a rule whose until= lies in the past is never
// applied; the pod is still counted.
func TestUntilInThePast(t *testing.T) {
	w := newWorld(t)
	a := w.Lab.AddPod("a")
	w.Pod(a, "pa", nil, map[string]string{"kubeshaper.io/loss": "uniform egress 100%", "kubeshaper.io/until": "2020-01-01T00:00:00Z"})
	w.StartAgent(keepRules)
	w.Eventually(10*time.Second, "pa counted", func() (bool, string) { return w.Filters(a) == 2, "" })
	if lossy(w, a) {
		t.Error("a rule past its until= was applied")
	}
	w.Eventually(5*time.Second, "Expired event", func() (bool, string) { return len(w.Events("pa", "Expired")) == 1, "" })
}

// TestCustomPrograms: through the agent, an example program acts on real
// traffic and its drops are counted under reason "program"; a program the
// verifier rejects gives an ApplyFailed Event with the verifier's message,
// and the pod's other rules keep working.
func TestCustomPrograms(t *testing.T) {
	w := newWorld(t)
	a, b, c := w.Lab.AddPod("a"), w.Lab.AddPod("b"), w.Lab.AddPod("c")
	w.Pod(a, "pa", nil, map[string]string{"kubeshaper.io/program": "drop_port egress PORT=7401 PROTO=17"})
	w.Pod(b, "pb", nil, map[string]string{
		"kubeshaper.io/program": "bad_verifier egress",
		"kubeshaper.io/loss":    "uniform egress 100% port=7402",
	})
	w.Pod(c, "pc", nil, nil)
	w.StartAgent(agentenv.Options{Args: []string{"--program-dir", netlab.ProgramDir(t)}})

	w.Eventually(15*time.Second, "ApplyFailed on pb", func() (bool, string) {
		ev := w.Events("pb", "ApplyFailed")
		if len(ev) == 0 {
			return false, ""
		}
		return true, ev[0].Message
	})
	msg := w.Events("pb", "ApplyFailed")[0].Message
	t.Logf("pb ApplyFailed: %s", msg)
	for _, want := range []string{"custom program bad_verifier egress", "verifier rejected", "invalid access to packet", "the pod's other rules are applied"} {
		if !strings.Contains(msg, want) {
			t.Errorf("ApplyFailed event lacks %q: %s", want, msg)
		}
	}
	const n = 1000
	send := func(from, to *netlab.Pod, port int) netlab.UDPResult {
		r, err := netlab.UDPStream(from, to, port, n, 100)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	w.Eventually(10*time.Second, "pa's program", func() (bool, string) { return send(a, c, 7401).Received == 0, "" })
	if r := send(a, c, 7403); r.Received != n {
		t.Errorf("pa: %d of %d datagrams to another port arrived", r.Received, n)
	}
	m, err := w.Maps()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cnt, _, err := m.Counters(w.Ifindex(a), rules.Egress)
	if err != nil {
		t.Fatal(err)
	}
	drops := cnt.DropPackets[datapath.ReasonProgram]
	if drops < n {
		t.Errorf("pa: %d drops under reason program, want at least %d", drops, n)
	}
	// pb: the built-in targeted loss works despite the failed program.
	if r := send(b, c, 7402); r.Received != 0 {
		t.Errorf("pb's loss rule: %d of %d arrived", r.Received, n)
	}
	if r := send(b, c, 7403); r.Received != n {
		t.Errorf("pb: %d of %d datagrams to another port arrived", r.Received, n)
	}
	if got := w.Filters(b); got != 2 {
		t.Errorf("pb has %d kubeshaper filters, want its 2", got)
	}
}

// TestServiceTargetFollowsEndpoints: a loss rule targeted at a Service
// (to=svc:namespace/name) hits its endpoints and follows its
// EndpointSlices as the backing Deployment scales up, is replaced and
// goes (the test plays the EndpointSlice controller, which this control
// plane does not run).
func TestServiceTargetFollowsEndpoints(t *testing.T) {
	w := newWorld(t)
	a, b, c := w.Lab.AddPod("a"), w.Lab.AddPod("b"), w.Lab.AddPod("c")
	ctx := context.Background()
	if _, err := w.Env.CreateService(ctx, w.NS, "db", map[string]string{"app": "db"}, nil); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-x1", Namespace: w.NS, Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	setEndpoints := func(pods ...*netlab.Pod) {
		t.Helper()
		slice.Endpoints = nil
		for _, p := range pods {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.IP.String()}})
		}
		var err error
		if slice.ResourceVersion == "" {
			slice, err = w.CS.DiscoveryV1().EndpointSlices(w.NS).Create(ctx, slice, metav1.CreateOptions{})
		} else {
			slice, err = w.CS.DiscoveryV1().EndpointSlices(w.NS).Update(ctx, slice, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	setEndpoints(b)
	w.Pod(a, "client", nil, map[string]string{"kubeshaper.io/loss": "uniform egress 100% to=svc:db proto=udp"})
	w.StartAgent(keepRules)

	const n = 300
	arrives := func(to *netlab.Pod) bool {
		r, err := netlab.UDPStream(a, to, 7501, n, 100)
		if err != nil {
			t.Fatal(err)
		}
		return r.Received == n
	}
	expect := func(what string, toB, toC bool) {
		t.Helper()
		start := time.Now()
		w.Eventually(10*time.Second, what, func() (bool, string) {
			return arrives(b) == toB && arrives(c) == toC, ""
		})
		t.Logf("%s: in effect after %v", what, time.Since(start).Round(time.Millisecond))
	}
	expect("endpoint b only: traffic to b lost, to c delivered", false, true)
	setEndpoints(b, c)
	expect("scaled up to b and c: both lost", false, false)
	setEndpoints(c)
	expect("b replaced by c: b delivered, c lost", true, false)
	if err := w.CS.DiscoveryV1().EndpointSlices(w.NS).Delete(ctx, slice.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("no endpoints: both delivered", true, true)
}
