package agentbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// TestAgentGCPercent (make bench-agent-gc; skipped otherwise) measures the
// agent's memory at 250 pods after 200 annotation changes with Go's
// default GOGC=100 and with the agent's own default (GOGC unset: 50,
// cmd/kubeshaper-agent/gc.go), the two started in turn (alternating which goes first) against
// the same apiserver and pods, 4 rounds each; it writes docs/bench/agent-gc.json
// with the medians of VmRSS, RssAnon, RssFile (KiB) and the agent's CPU
// time over the run.
func TestAgentGCPercent(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench-agent-gc)")
	}
	const npods, changes, rounds = 250, 200, 4
	w := agentenv.New(t, "ag")
	pods := make([]*netlab.Pod, npods)
	for i := range pods {
		pods[i] = w.Lab.AddPod(fmt.Sprintf("p%d", i))
		ann := map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
		w.Pod(pods[i], fmt.Sprintf("p%d", i), map[string]string{"app": "scale"}, ann)
	}
	configs := []struct{ name, env string }{{"GOGC=100", "GOGC=100"}, {"agent default (50)", ""}}
	samples := map[string]map[string][]float64{}
	for round := range rounds {
		for j := range configs {
			c := configs[(j+round)%len(configs)] // ABBA: neither always first
			var env []string
			if c.env != "" {
				env = []string{c.env}
			}
			ag := w.StartAgent(agentenv.Options{Env: env})
			w.WaitRate(pods[npods-1], rules.Egress, uint64(10+npods-1)*1e6)
			for i := range changes {
				mbit := 1000 + round*len(configs)*changes + i
				patch := fmt.Sprintf(`{"metadata":{"annotations":{"kubeshaper.io/bandwidth":"%dmbit egress"}}}`, mbit)
				if _, err := w.CS.CoreV1().Pods(w.NS).Patch(context.Background(), fmt.Sprintf("p%d", i%npods), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			last := pods[(changes-1)%npods]
			w.WaitRate(last, rules.Egress, uint64(1000+round*len(configs)*changes+changes-1)*1e6)
			st, err := ag.ProcStatus()
			if err != nil {
				t.Fatal(err)
			}
			cpu, err := ag.CPUTime()
			if err != nil {
				t.Fatal(err)
			}
			ag.Stop(t)
			if samples[c.name] == nil {
				samples[c.name] = map[string][]float64{}
			}
			s := samples[c.name]
			for _, k := range []string{"VmRSS", "RssAnon", "RssFile"} {
				s[k] = append(s[k], float64(st[k]))
			}
			s["cpu_ms"] = append(s["cpu_ms"], float64(cpu.Milliseconds()))
			t.Logf("round %d %s: VmRSS %d RssAnon %d RssFile %d KiB, CPU %v", round, c.name, st["VmRSS"], st["RssAnon"], st["RssFile"], cpu)
		}
	}
	med := func(xs []float64) float64 {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	res := map[string]any{"pods": npods, "changes": changes, "rounds": rounds, "load": loadAvg(), "date": time.Now().UTC().Format(time.RFC3339)}
	for name, s := range samples {
		m := map[string]any{}
		for k, xs := range s {
			m[k+"_median"] = med(xs)
			m[k] = xs
		}
		res[name] = m
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("GC figures:\n%s", out)
	if root, err := kubeenv.RepoRoot(); err == nil {
		os.WriteFile(filepath.Join(root, "docs", "bench", "agent-gc.json"), append(out, '\n'), 0o644)
	}
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b[:min(len(b), 14)])
}
