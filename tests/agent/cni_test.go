package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/foreign"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
	"github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

// ourFirst reports whether kubeshaper's program is the first to run on the
// host veth's tc ingress (pod egress), and what runs first.
func ourFirst(w *agentenv.World, ifindex int) (bool, string) {
	var chain []attach.Entry
	err := podnet.Do(w.NodeNetns(), func() (err error) { chain, err = attach.Chain(ifindex, attach.HookIngress); return err })
	if err != nil {
		return false, err.Error()
	}
	if len(chain) == 0 {
		return false, "nothing on the hook"
	}
	e := chain[0]
	return e.Name == "ks_pod_egress" || e.Name == "kubeshaper_pod_egress", e.String()
}

// takeover is one way another tool takes kubeshaper's place on a pod's
// host veth tc ingress, as Cilium does at endpoint regeneration.
type takeover struct {
	name string
	do   func(t *testing.T, w *agentenv.World, p *netlab.Pod, ifindex int, pins string) func()
}

var takeovers = []takeover{
	{"our cls_bpf filter deleted", func(t *testing.T, w *agentenv.World, p *netlab.Pod, _ int, _ string) func() {
		if err := foreign.DelFilter(w.Lab.Node, p.HostVeth, "ingress", "1", "0x4b53"); err != nil {
			t.Fatal(err)
		}
		return func() {}
	}},
	{"cls_bpf pref 1 handle 1 added after ours", func(t *testing.T, w *agentenv.World, p *netlab.Pod, _ int, pins string) func() {
		prog, err := foreign.Load(foreign.OK, foreign.Target{})
		if err != nil {
			t.Fatal(err)
		}
		if err := foreign.AddClsBPF(w.Lab.Node, p.HostVeth, "ingress", prog, filepath.Join(pins, p.HostVeth)); err != nil {
			t.Fatal(err)
		}
		return func() { prog.Close() }
	}},
	{"tcx program attached at the head", func(t *testing.T, w *agentenv.World, _ *netlab.Pod, ifindex int, _ string) func() {
		prog, err := foreign.Load(foreign.OK, foreign.Target{})
		if err != nil {
			t.Fatal(err)
		}
		var l link.Link
		if err := podnet.Do(w.NodeNetns(), func() (err error) { l, err = foreign.AttachTCX(ifindex, true, true, prog); return err }); err != nil {
			t.Fatal(err)
		}
		return func() { l.Close(); prog.Close() }
	}},
}

// TestAgentHoldsPosition: another tool deletes our filter, puts a cls_bpf
// filter before ours, takes the tcx head; each time the agent is first
// again within 1 s (issue 11: "restores within 1 s"), the other tool's
// program still there. Takeovers of one pod are 5.1 s apart: closer, the
// agent would (rightly) see a fight and back off (3 retakes in 10 s).
// With KUBESHAPER_BENCH=1: 7 pods × 3 takeovers, p50/p99 into
// docs/bench/coexistence.json.
func TestAgentHoldsPosition(t *testing.T) {
	if !attach.TCXSupported() {
		t.Skip("the kernel has no tcx")
	}
	w := agentenv.New(t, "cn")
	pods := 1
	if bench.On() {
		pods = 7
	}
	var ps []*netlab.Pod
	for i := range pods {
		p := w.Lab.AddPod(fmt.Sprintf("p%d", i))
		w.Pod(p, fmt.Sprintf("p%d", i), nil, map[string]string{"kubeshaper.io/bandwidth": "50mbit egress"})
		ps = append(ps, p)
	}
	a := w.StartAgent(keepRules)
	// Random, not t.TempDir's "001": another run of this test (another
	// checkout) removing its own dir must not remove ours.
	pins := netlab.PinDir(t, "kscn")
	for _, p := range ps {
		w.WaitRate(p, 0, 50e6)
	}
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 700 * time.Millisecond)
			idx := w.Ifindex(p)
			for k, to := range takeovers {
				if k > 0 {
					time.Sleep(5100 * time.Millisecond)
				}
				undo := to.do(t, w, p, idx, pins)
				defer undo()
				start := time.Now()
				d, err := agentenv.Poll(3*time.Second, 2*time.Millisecond, func() (bool, string) { return ourFirst(w, idx) })
				if err != nil {
					t.Errorf("%s, %s: not first again: %v", p.Name, to.name, err)
					return
				}
				_ = start
				t.Logf("%s, %s: first again after %v", p.Name, to.name, d.Round(time.Millisecond))
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
				if d > time.Second {
					t.Errorf("%s, %s: restored after %v, want within 1 s", p.Name, to.name, d)
				}
			}
		}()
	}
	wg.Wait()
	if n := a.CountLog("backs off"); n != 0 {
		t.Errorf("the agent backed off %d times on takeovers 5.1 s apart", n)
	}
	// The other tools' programs are all still there.
	if out := w.Lab.In(w.Lab.Node, "tc", "filter", "show", "dev", ps[0].HostVeth, "ingress"); !strings.Contains(out, "handle 0x1 ") {
		t.Errorf("the foreign cls_bpf filter is gone:\n%s", out)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if bench.On() && len(took) > 0 {
		q := func(f float64) float64 { return took[min(len(took)-1, int(f*float64(len(took))))].Seconds() * 1e3 }
		bench.Write(t, "docs/bench/coexistence.json", "restore", map[string]any{
			"takeovers":    len(took),
			"p50_ms":       q(0.5),
			"p99_ms":       q(0.99),
			"max_ms":       took[len(took)-1].Seconds() * 1e3,
			"kinds":        []string{takeovers[0].name, takeovers[1].name, takeovers[2].name},
			"pods":         pods,
			"poll_tcx_ms":  250,
			"load_average": stats.LoadAvg(),
		})
	}
}

// TestAgentBacksOffAFight: a tool that retakes the tcx head whenever
// kubeshaper is first. The agent retakes 3 times, then backs off, posts a
// Warning Bypassed naming the program, and reports the pod not enforced
// on /metrics — it does not fight forever, nor stay silent.
func TestAgentBacksOffAFight(t *testing.T) {
	if !attach.TCXSupported() {
		t.Skip("the kernel has no tcx")
	}
	w := agentenv.New(t, "cn")
	p := w.Lab.AddPod("fight")
	w.Pod(p, "fight", nil, map[string]string{"kubeshaper.io/bandwidth": "50mbit egress"})
	a := w.StartAgent(agentenv.Options{Metrics: true})
	w.WaitRate(p, 0, 50e6)
	idx := w.Ifindex(p)
	stop := make(chan struct{})
	done := make(chan struct{})
	var links []link.Link
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if first, _ := ourFirst(w, idx); first {
				// A fresh instance each time: a program appears once
				// in a tcx chain.
				prog, err := foreign.Load(foreign.OK, foreign.Target{})
				if err != nil {
					t.Error(err)
					return
				}
				podnet.Do(w.NodeNetns(), func() error {
					l, err := foreign.AttachTCX(idx, true, true, prog)
					if err == nil {
						links = append(links, l)
					}
					return err
				})
				prog.Close()
			}
		}
	}()
	defer func() {
		close(stop)
		<-done
		for _, l := range links {
			l.Close()
		}
	}()
	w.Eventually(15*time.Second, "a Bypassed Event naming the program", func() (bool, string) {
		for _, e := range w.Events("fight", "Bypassed") {
			if strings.Contains(e.Message, "foreign_ok") && strings.Contains(e.Message, "keeps taking the head") {
				return true, e.Message
			}
		}
		return false, fmt.Sprint(w.Events("fight", ""))
	})
	w.Eventually(8*time.Second, "kubeshaper_pod_enforced{direction=egress} 0", func() (bool, string) {
		v, err := labelledMetric(a, "kubeshaper_pod_enforced", "direction", "egress")
		return err == nil && v == 0, fmt.Sprint(v, err)
	})
}

// TestAgentMovesBypassedPodSide: deliveries to pod b arrive by
// bpf_redirect_peer from a program on pod a's host veth, past b's host
// veth. The agent sees b's interface receive while its hook sees nothing,
// moves b's ingress rule to b's eth0 (Event MovedPodSide), and the limit
// then holds.
func TestAgentMovesBypassedPodSide(t *testing.T) {
	w := agentenv.New(t, "cn")
	pa, pb := w.Lab.AddPod("a"), w.Lab.AddPod("b")
	w.Pod(pb, "b", nil, map[string]string{"kubeshaper.io/bandwidth": "50mbit ingress"})
	w.StartAgent(keepRules)
	w.WaitRate(pb, 1, 50e6)
	ia, ib := w.Ifindex(pa), w.Ifindex(pb)
	tgt := foreign.Target{Ifindex: ib}
	podnet.Do(w.NodeNetns(), func() error {
		l, err := netlink.LinkByIndex(ib)
		if err == nil {
			tgt.SrcMAC = l.Attrs().HardwareAddr
		}
		return err
	})
	podnet.Do(pb.Netns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			tgt.DstMAC = l.Attrs().HardwareAddr
		}
		return err
	})
	prog, err := foreign.Load(foreign.Peer, tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if attach.TCXSupported() {
		var l link.Link
		if err := podnet.Do(w.NodeNetns(), func() (err error) { l, err = foreign.AttachTCX(ia, true, false, prog); return err }); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	} else {
		pin := "/sys/fs/bpf/kscn-peer-" + pa.Name
		defer os.Remove(pin)
		if err := foreign.AddClsBPF(w.Lab.Node, pa.HostVeth, "ingress", prog, pin); err != nil {
			t.Fatal(err)
		}
	}
	// Traffic while the agent judges (every 2 s).
	streamed := make(chan struct{})
	go func() { netlab.TCPRate(pa, pb, 5*time.Second); close(streamed) }()
	w.Eventually(10*time.Second, "a MovedPodSide Event", func() (bool, string) {
		return len(w.Events("b", "MovedPodSide")) > 0, fmt.Sprint(w.Events("b", ""))
	})
	<-streamed
	got, err := netlab.TCPRate(pa, pb, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Goodput over 3 s, the bucket's 0.5 s credit included: ≤ 1.2×.
	t.Logf("pod-side ingress on a peer-redirect path: %.1f Mbit/s", got/1e6)
	if got > 1.2*50e6 || got < 0.5*50e6 {
		t.Fatalf("pod-side ingress: %.1f Mbit/s, want the 50 Mbit/s limit", got/1e6)
	}
}

// TestStandardAnnotationsStepBack: the CNI bandwidth plugin's tbf is on
// the pod's host veth; with --standard-annotations=auto the agent leaves
// kubernetes.io/ingress-bandwidth to it (an Event, no second limit) and
// still applies kubeshaper.io/* keys. An unknown value stops the agent.
func TestStandardAnnotationsStepBack(t *testing.T) {
	w := agentenv.New(t, "cn")
	p := w.Lab.AddPod("bw")
	w.Lab.In(w.Lab.Node, "tc", "qdisc", "add", "dev", p.HostVeth, "root", "handle", "1:", "tbf", "rate", "30mbit", "burst", "64kb", "latency", "25ms")
	w.Pod(p, "bw", nil, map[string]string{"kubernetes.io/ingress-bandwidth": "30M", "kubeshaper.io/loss": "uniform egress 1%"})
	a := w.StartAgent(keepRules)
	w.Eventually(10*time.Second, "a StandardAnnotationsLeft Event", func() (bool, string) {
		ev := w.Events("bw", "StandardAnnotationsLeft")
		return len(ev) > 0 && strings.Contains(ev[0].Message, "tbf"), fmt.Sprint(w.Events("bw", ""))
	})
	w.Eventually(10*time.Second, "the loss rule applied", func() (bool, string) {
		c, ok := w.Rule(p, 0)
		return ok && c.LossProbability() > 0, c.String()
	})
	if c, ok := w.Rule(p, 1); ok && c.RateBits() != 0 {
		t.Fatalf("ingress: %s — a second limit stacked on the bandwidth plugin's", c)
	}
	a.Stop(t)
	bad := w.StartAgent(agentenv.Options{NoWait: true, Args: []string{"--standard-annotations=maybe"}})
	if exited, _ := bad.Wait(10 * time.Second); !exited || !strings.Contains(bad.Log(), "--standard-annotations") {
		t.Fatalf("--standard-annotations=maybe: exited %v, log:\n%s", exited, bad.Log())
	}
}

// labelledMetric reads the first sample of name whose labels include
// label=value.
func labelledMetric(a *agentenv.Agent, name, label, value string) (float64, error) {
	all, err := agentenv.Scrape(a.Metrics)
	if err != nil {
		return 0, err
	}
	for k, v := range all {
		if strings.HasPrefix(k, name+"{") && (strings.Contains(k, label+"="+value) || strings.Contains(k, label+`="`+value+`"`)) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no sample %s{%s=%s}", name, label, value)
}
