package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/sockpace"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// TestAgentLifecycle walks one node through what users do: annotate,
// change, remove, Service rules and pod overrides, a bad value, pod
// deletion, an agent restart that keeps rules (with a pod deleted while it
// was down), and a final SIGTERM that removes everything.
func TestAgentLifecycle(t *testing.T) {
	w := newWorld(t)
	a, b, c := w.Lab.AddPod("a"), w.Lab.AddPod("b"), w.Lab.AddPod("c")
	app := map[string]string{"app": "web"}
	w.Pod(a, "pa", app, nil)
	w.Pod(b, "pb", app, nil)
	w.Pod(c, "pc", map[string]string{"app": "db"}, nil)
	ag := w.StartAgent(keepRules)

	// Every pod is counted (both filters) even without a rule.
	w.Eventually(10*time.Second, "filters on every pod", func() (bool, string) {
		return w.Filters(a) == 2 && w.Filters(b) == 2 && w.Filters(c) == 2, ""
	})

	t.Run("annotate shapes real traffic", func(t *testing.T) {
		w.Annotate("pod", "pa", map[string]any{"kubeshaper.io/bandwidth": "20mbit egress"})
		w.WaitRate(a, rules.Egress, 20e6)
		up, err := netlab.TCPRate(a, b, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		down, err := netlab.TCPRate(b, a, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("pa uploads %.1f Mbit/s, downloads %.1f Mbit/s", up/1e6, down/1e6)
		if up > 1.3*20e6 || up < 0.3*20e6 {
			t.Errorf("upload %.1f Mbit/s, want about 20", up/1e6)
		}
		if down < 200e6 {
			t.Errorf("download %.1f Mbit/s: an egress rule must not slow it", down/1e6)
		}
		if len(w.Events("pa", "Applied")) == 0 {
			t.Error("no Applied event on pa")
		}
	})

	t.Run("change updates, removal clears", func(t *testing.T) {
		w.Annotate("pod", "pa", map[string]any{"kubeshaper.io/bandwidth": "40mbit egress"})
		w.WaitRate(a, rules.Egress, 40e6)
		w.Annotate("pod", "pa", map[string]any{"kubeshaper.io/bandwidth": nil})
		w.Eventually(10*time.Second, "pa's rule gone", func() (bool, string) {
			cfg, ok := w.Rule(a, rules.Egress)
			return ok && cfg.String() == "monitor", cfg.String()
		})
	})

	t.Run("service rules reach its pods, pod overrides win", func(t *testing.T) {
		ctx := context.Background()
		w.Annotate("pod", "pb", map[string]any{"kubeshaper.io/loss": "uniform egress 5%"})
		if _, err := w.Env.CreateService(ctx, w.NS, "web", app, map[string]string{"kubeshaper.io/loss": "uniform egress 1%; uniform ingress 2%"}); err != nil {
			t.Fatal(err)
		}
		w.WaitLoss(a, rules.Egress, 0.01)
		w.WaitLoss(a, rules.Ingress, 0.02)
		w.WaitLoss(b, rules.Egress, 0.05) // the pod's own value
		w.WaitLoss(b, rules.Ingress, 0.02)
		if cfg, _ := w.Rule(c, rules.Egress); cfg.String() != "monitor" {
			t.Errorf("pc is not selected by the Service but has %s", cfg.String())
		}
		// The Service changes: its pods follow.
		w.Annotate("service", "web", map[string]any{"kubeshaper.io/loss": "uniform egress 3%"})
		w.WaitLoss(a, rules.Egress, 0.03)
		w.WaitLoss(a, rules.Ingress, 0)
	})

	t.Run("invalid value: event, other keys still apply", func(t *testing.T) {
		w.Annotate("pod", "pc", map[string]any{"kubeshaper.io/bandwidth": "fast egress", "kubeshaper.io/loss": "uniform ingress 7%"})
		w.WaitLoss(c, rules.Ingress, 0.07)
		w.Eventually(10*time.Second, "InvalidAnnotation event on pc", func() (bool, string) {
			ev := w.Events("pc", "InvalidAnnotation")
			return len(ev) > 0 && strings.Contains(ev[0].Message, "fast egress") && ev[0].Type == "Warning", ""
		})
		if cfg, _ := w.Rule(c, rules.Egress); cfg.RateBits() != 0 {
			t.Errorf("an invalid bandwidth was half-applied: %s", cfg.String())
		}
	})

	t.Run("pod deleted: no filter, no entry", func(t *testing.T) {
		idx := w.Ifindex(c)
		if err := w.CS.CoreV1().Pods(w.NS).Delete(context.Background(), "pc", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		w.Eventually(10*time.Second, "pc's state removed", func() (bool, string) {
			_, ok1 := w.Rule(c, rules.Egress)
			_, ok2 := w.Rule(c, rules.Ingress)
			return !ok1 && !ok2 && w.Filters(c) == 0, ""
		})
		_ = idx
	})

	t.Run("hostNetwork pod: NotShapeable event, nothing applied", func(t *testing.T) {
		zero := int64(0)
		_, err := w.CS.CoreV1().Pods(w.NS).Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "ph", Annotations: map[string]string{"kubeshaper.io/bandwidth": "10mbit egress"}},
			Spec: corev1.PodSpec{NodeName: agentenv.NodeName, HostNetwork: true, TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "c", Image: "none"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.Eventually(10*time.Second, "NotShapeable event on ph", func() (bool, string) {
			ev := w.Events("ph", "NotShapeable")
			return len(ev) > 0 && strings.Contains(ev[0].Message, "hostNetwork"), ""
		})
	})

	t.Run("restart keeps rules; a pod deleted meanwhile is cleaned", func(t *testing.T) {
		ag.Stop(t) // --cleanup-on-exit=false
		if cfg, ok := w.Rule(a, rules.Egress); !ok || cfg.LossProbability() < 0.029 {
			t.Fatalf("rules gone after a keep-rules exit: %s", cfg.String())
		}
		if w.Filters(a) != 2 {
			t.Fatalf("filters gone after a keep-rules exit")
		}
		if err := w.CS.CoreV1().Pods(w.NS).Delete(context.Background(), "pb", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		ag = w.StartAgent(cleanupRules)
		w.Eventually(10*time.Second, "pb's leftovers removed", func() (bool, string) {
			_, ok := w.Rule(b, rules.Egress)
			return !ok && w.Filters(b) == 0, ""
		})
		w.WaitLoss(a, rules.Egress, 0.03)
		if w.Filters(a) != 2 {
			t.Errorf("pa has %d filters after the restart, want 2", w.Filters(a))
		}
	})

	t.Run("SIGTERM with cleanup removes everything", func(t *testing.T) {
		// A drop-mode rule attaches the socket-pacing program (issue 13):
		// the cleanup must take it away too.
		link := filepath.Join(w.PinDir, sockpace.LinkPin)
		w.Annotate("pod", "pa", map[string]any{"kubeshaper.io/bandwidth": "20mbit egress"})
		w.Eventually(10*time.Second, "socket-pacing link pinned", func() (bool, string) {
			_, err := os.Stat(link)
			return err == nil, fmt.Sprint(err)
		})
		took := ag.Stop(t)
		t.Logf("shutdown with cleanup took %v", took)
		if _, err := os.Stat(link); err == nil {
			t.Errorf("the socket-pacing program is still attached (%s pinned) after cleanup", link)
		}
		if n := w.Filters(a); n != 0 {
			t.Errorf("%d filters left on pa", n)
		}
		if n := w.Entries(); n != 0 {
			t.Errorf("%d map entries left", n)
		}
		if took > 2*time.Second {
			t.Errorf("cleanup took %v, want ≤ 2 s", took)
		}
	})
}
