package agent

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TestAmbiguousPodIPIsNotGuessed: a second network namespace holds the
// pod's IP behind another veth of the node (a stale sandbox a CNI failed to
// delete). The agent must not shape either: a NotShapeable Event naming
// both, no rule. Once the stale one goes, the pod is shaped.
func TestAmbiguousPodIPIsNotGuessed(t *testing.T) {
	w := newWorld(t)
	a := w.Lab.AddPod("a")
	twin := w.Lab.Prefix + "-twin"
	twinVeth := w.Lab.Prefix + "t0"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", twin)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", twin).Run() })
	run("ip", "link", "add", twinVeth, "netns", w.Lab.Node, "type", "veth", "peer", "name", "eth0", "netns", twin)
	run("ip", "-n", twin, "addr", "add", a.IP.String()+"/24", "dev", "eth0")
	run("ip", "-n", twin, "link", "set", "eth0", "up")

	w.Pod(a, "pa", nil, map[string]string{"kubeshaper.io/bandwidth": "20mbit egress"})
	w.StartAgent(cleanupRules)
	w.Eventually(15*time.Second, "NotShapeable event on pa", func() (bool, string) {
		ev := w.Events("pa", "NotShapeable")
		if len(ev) == 0 {
			return false, "no event"
		}
		m := ev[0].Message
		return strings.Contains(m, a.HostVeth) && strings.Contains(m, twinVeth), m
	})
	if _, ok := w.Rule(a, rules.Egress); ok || w.Filters(a) != 0 {
		t.Fatalf("pa shaped although its IP is ambiguous (rule %v, %d filters)", ok, w.Filters(a))
	}

	// The failed resolution is retried with the queue's backoff (50 ms
	// doubling, at most 30 s): the rule follows within one more step.
	start := time.Now()
	run("ip", "netns", "del", twin)
	w.Eventually(40*time.Second, "pa shaped once the stale netns is gone", func() (bool, string) {
		c, ok := w.Rule(a, rules.Egress)
		return ok && c.RateBits() == 20e6, c.String()
	})
	t.Logf("shaped %v after the stale netns went", time.Since(start).Round(time.Millisecond))
}
