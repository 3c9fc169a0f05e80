package reliability

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
)

// TestAt250Pods runs the crash and shutdown cases on one node of
// 250 annotated netns pods (KUBESHAPER_PODS):
//
//   - crash: kill -9 the agent in the middle of its start-up reconcile, and
//     again in the middle of a change that re-syncs every pod (a Service
//     annotation); while it is down, change, delete and add pods; restart:
//     every rule converges to the annotations within 5 s, with exactly one
//     kubeshaper filter per hook of every pod, no leftover filter or entry
//     of a deleted pod, and no other filter anywhere;
//   - SIGTERM with --cleanup-on-exit=false leaves rules, counters and
//     filters (program IDs included) exactly as they were;
//   - SIGTERM with --cleanup-on-exit=true removes every filter and map
//     entry within 2 s.
func TestAt250Pods(t *testing.T) {
	n := envInt("KUBESHAPER_PODS", 250)
	w := agentenv.New(t, "rs")
	f := newFleet(w)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("p%d", i)
	}
	sel := map[string]string{"app": "fleet"}
	start := time.Now()
	f.add(t, names, sel, annotationsFor)
	if _, err := w.Env.CreateService(context.Background(), w.NS, "fleet", sel, map[string]string{"kubeshaper.io/loss": "uniform egress 1%"}); err != nil {
		t.Fatal(err)
	}
	svc := servicePolicy(t, "uniform egress 1%")
	t.Logf("%d netns pods with Pod objects and a Service created in %v", n, time.Since(start).Round(time.Millisecond))

	var ag *agentenv.Agent
	t.Run("kill -9 mid-reconcile, restart converges", func(t *testing.T) {
		// 1. During the start-up reconcile: nothing was pinned before.
		ag = w.StartAgent(agentenv.Options{NoWait: true})
		applied1 := killWhen(t, w, ag, func(m *agentenv.Maps) (bool, int) {
			c, _ := m.RuleCount()
			return c >= n/5*2, c / 2
		})
		var took1, took2 time.Duration
		took1, ag = restartConverges(t, w, f, svc)

		// 2. During a change every pod must follow: the Service's rule.
		w.Annotate("service", "fleet", map[string]any{"kubeshaper.io/loss": "uniform egress 2%"})
		svc = servicePolicy(t, "uniform egress 2%")
		applied2 := killWhen(t, w, ag, func(m *agentenv.Maps) (bool, int) {
			all, _ := m.AllRules()
			moved := 0
			for k, c := range all {
				if k.Direction() == rules.Egress && c.LossProbability() > 0.015 {
					moved++
				}
			}
			return moved >= n/5, moved
		})
		// While it is down: the cluster moves on.
		for i := 0; i < n/10; i++ {
			f.annotate(t, names[i], map[string]any{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit ingress", 500+i)})
		}
		for i := n / 10; i < n/10+n/12; i++ {
			f.deleteObject(t, names[i]) // the veth stays: leftovers to remove
		}
		for i := n/10 + n/12; i < n/10+n/12+n/50; i++ {
			f.deleteAll(t, names[i]) // the veth is gone too
		}
		var fresh []string
		for i := range n / 25 {
			fresh = append(fresh, fmt.Sprintf("new%d", i))
		}
		f.add(t, fresh, sel, func(i int) map[string]string {
			return map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 700+i)}
		})
		took2, ag = restartConverges(t, w, f, svc)
		filters := f.checkFilters(t)
		t.Logf("crash: kill -9 at %d/%d pods applied (start-up) → converged %v after restart; kill -9 at %d/%d pods changed (Service rule) + %d changed, %d objects deleted, %d pods gone, %d new while down → converged %v after restart (target 5 s); %d filters, exactly 2 per live pod, none elsewhere",
			applied1, n, took1.Round(time.Millisecond), applied2, n, n/10, n/12, n/50, n/25, took2.Round(time.Millisecond), filters)
		record(t, "crash_restart", map[string]any{
			"pods": n, "killed_at_applied": applied1, "converged_after_restart_s": secs(took1),
			"killed_at_changed": applied2, "converged_after_restart_with_changes_s": secs(took2),
		})
		for _, took := range []time.Duration{took1, took2} {
			if took > bound(5*time.Second) {
				t.Errorf("convergence after restart took %v: target 5 s, bound %v", took, bound(5*time.Second))
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("SIGTERM --cleanup-on-exit=false keeps rules exactly", func(t *testing.T) {
		// Back to n pods, applied by the running agent.
		var more []string
		for i := len(f.expected(svc)) / 2; i < n; i++ {
			more = append(more, fmt.Sprintf("more%d", i))
		}
		f.add(t, more, sel, annotationsFor)
		converge(t, w, f, svc)
		ag.Stop(t) // the last agent runs with --cleanup-on-exit=false
		before := snapshot(t, w)
		ag = w.StartAgent(agentenv.Options{})
		converge(t, w, f, svc)
		mid := snapshot(t, w)
		took := ag.Stop(t)
		after := snapshot(t, w)
		if d := before.diff(after, false); d != "" {
			// The restart re-attached (new program IDs); compare rules.
			t.Errorf("rules changed across a restart: %s", d)
		}
		if d := mid.diff(after, true); d != "" {
			t.Errorf("SIGTERM with --cleanup-on-exit=false changed state: %s", d)
		}
		t.Logf("shutdown keep: exit in %v; %d rules (every field but the bucket's running state), %d counter entries, %d filters (names, slots, program IDs) identical before and after; also identical across the restart (program IDs aside)",
			took.Round(time.Millisecond), len(after.rules), after.stats, after.nfilters)
		record(t, "shutdown_keep", map[string]any{"pods": len(after.rules) / 2, "exit_s": secs(took), "rules": len(after.rules), "filters": after.nfilters})
	})

	t.Run("SIGTERM --cleanup-on-exit=true removes everything within 2 s", func(t *testing.T) {
		ag = w.StartAgent(agentenv.Options{CleanupOnExit: true})
		converge(t, w, f, svc)
		pods := len(f.expected(svc)) / 2
		took := ag.Stop(t)
		ours := w.AllOurFilters()
		pinned, err := w.PinnedObjects()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shutdown cleanup: %d pods cleared in %v (target 2 s); %d kubeshaper filters, %d pinned objects (%s), %d entries left",
			pods, took.Round(time.Millisecond), len(ours), len(pinned), agentenv.FormatCounts(pinned), agentenv.TotalEntries(pinned))
		record(t, "shutdown_cleanup", map[string]any{"pods": pods, "exit_s": secs(took), "filters_left": len(ours), "pins_left": len(pinned)})
		if len(ours) != 0 {
			t.Errorf("%d interfaces keep kubeshaper filters after cleanup", len(ours))
		}
		if len(pinned) != 0 {
			t.Errorf("pinned objects left after cleanup: %s", agentenv.FormatCounts(pinned))
		}
		f.checkNoFilters(t)
		if took > bound(2*time.Second) {
			t.Errorf("cleanup of %d pods took %v: target 2 s, bound %v", pods, took, bound(2*time.Second))
		}
	})
}

// annotationsFor gives pod i its own rule: a third bandwidth, a third
// loss, a third nothing (counted only, or the Service's rule).
func annotationsFor(i int) map[string]string {
	switch i % 3 {
	case 0:
		return map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
	case 1:
		return map[string]string{"kubeshaper.io/loss": fmt.Sprintf("uniform ingress %d%%", 1+i%40)}
	}
	return nil
}

func servicePolicy(t *testing.T, loss string) rules.Policy {
	p, errs := rules.ParseAnnotations(map[string]string{"kubeshaper.io/loss": loss})
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	return p
}

// killWhen polls the pinned maps every millisecond and kills the agent
// with SIGKILL as soon as cond holds; it returns cond's progress figure
// then. It fails if the agent got done before it could be caught.
func killWhen(t *testing.T, w *agentenv.World, ag *agentenv.Agent, cond func(*agentenv.Maps) (bool, int)) int {
	t.Helper()
	var progress int
	_, err := agentenv.Poll(60*time.Second, time.Millisecond, func() (bool, string) {
		if exited, err := ag.Exited(); exited {
			t.Fatalf("the agent exited: %v", err)
		}
		m, err := w.Maps()
		if err != nil || !m.Present() {
			return false, fmt.Sprint(err)
		}
		defer m.Close()
		ok, p := cond(m)
		if ok {
			ag.Cmd.Process.Signal(syscall.SIGKILL)
			progress = p
		}
		return ok, fmt.Sprint(p)
	})
	if err != nil {
		t.Fatal(err)
	}
	ag.Kill() // reap
	return progress
}

// restartConverges starts a new agent (keeping rules on exit) and returns
// how long after its start the rule map matched the model, then checks
// the filters.
func restartConverges(t *testing.T, w *agentenv.World, f *fleet, svc rules.Policy) (time.Duration, *agentenv.Agent) {
	t.Helper()
	exp := f.expected(svc)
	start := time.Now()
	ag := w.StartAgent(agentenv.Options{NoWait: true})
	last := ""
	_, err := agentenv.Poll(60*time.Second, 10*time.Millisecond, func() (bool, string) {
		m, err := w.Maps()
		if err != nil {
			return false, err.Error()
		}
		defer m.Close()
		all, err := m.AllRules()
		if err != nil {
			return false, err.Error()
		}
		last = diffMaps(exp, all)
		return last == "", last
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("rules did not converge after the restart: %v", err)
	}
	f.checkFilters(t)
	return took, ag
}

// converge waits until the rule map matches the model.
func converge(t *testing.T, w *agentenv.World, f *fleet, svc rules.Policy) {
	t.Helper()
	if _, err := agentenv.Poll(bound(5*time.Second), 20*time.Millisecond, func() (bool, string) {
		m, err := w.Maps()
		if err != nil {
			return false, err.Error()
		}
		defer m.Close()
		all, err := m.AllRules()
		if err != nil {
			return false, err.Error()
		}
		d := diffMaps(f.expected(svc), all)
		return d == "", d
	}); err != nil {
		t.Fatalf("rules do not match the annotations: %v", err)
	}
}

// checkNoFilters: no filter of any tool is left on the fleet's veths.
func (f *fleet) checkNoFilters(t *testing.T) {
	t.Helper()
	for _, m := range f.pods {
		fs, err := allFilters(f.w, m.ifindex)
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) > 0 {
			t.Errorf("pod %s keeps filters %+v", m.name, fs)
		}
	}
}

// state is what the kernel holds for kubeshaper on the node.
type state struct {
	rules    map[datapath.Key]datapath.Config
	stats    int
	filters  map[int][]attach.Filter
	nfilters int
	pins     map[string]int
}

func snapshot(t *testing.T, w *agentenv.World) state {
	t.Helper()
	m, err := w.Maps()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var s state
	if s.rules, err = m.AllRules(); err != nil {
		t.Fatal(err)
	}
	keys, err := m.Keys()
	if err != nil {
		t.Fatal(err)
	}
	s.stats = len(keys)
	s.filters = w.AllOurFilters()
	for _, fl := range s.filters {
		s.nfilters += len(fl)
	}
	if s.pins, err = w.PinnedObjects(); err != nil {
		t.Fatal(err)
	}
	return s
}

// withoutFlows drops the entry counts of flow maps: records of traffic,
// not rules (their names still count).
func withoutFlows(pins map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range pins {
		if strings.Contains(k, "flow") {
			v = 0
		}
		out[k] = v
	}
	return out
}

// diff compares two states: rule values field by field (a
// datapath.Config holds no bucket state), the entry counts of every pinned map, and the
// filters — with their program IDs when progIDs is set.
func (a state) diff(b state, progIDs bool) string {
	if !reflect.DeepEqual(a.rules, b.rules) {
		n := 0
		for k, c := range a.rules {
			if !reflect.DeepEqual(b.rules[k], c) {
				n++
			}
		}
		return fmt.Sprintf("%d rules of %d differ (%d vs %d entries)", n, len(a.rules), len(a.rules), len(b.rules))
	}
	if a.stats != b.stats || !reflect.DeepEqual(withoutFlows(a.pins), withoutFlows(b.pins)) {
		return fmt.Sprintf("pinned maps differ: %s vs %s", agentenv.FormatCounts(a.pins), agentenv.FormatCounts(b.pins))
	}
	if len(a.filters) != len(b.filters) {
		return fmt.Sprintf("filters on %d interfaces, then %d", len(a.filters), len(b.filters))
	}
	for idx, fa := range a.filters {
		fb := b.filters[idx]
		if len(fa) != len(fb) {
			return fmt.Sprintf("ifindex %d: %d filters, then %d", idx, len(fa), len(fb))
		}
		for i := range fa {
			x, y := fa[i], fb[i]
			if !progIDs {
				x.ProgID, y.ProgID = 0, 0
			}
			if x != y {
				return fmt.Sprintf("ifindex %d: filter %+v, then %+v", idx, fa[i], fb[i])
			}
		}
	}
	return ""
}
