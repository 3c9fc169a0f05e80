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
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// agentConfig is one of the two agents a side-by-side run compares.
type agentConfig struct {
	name string
	opts agentenv.Options
}

// sideBySide measures two agent configurations against the same apiserver
// and the same 250 pods: each round starts one, waits for its start-up
// reconcile, applies 200 annotation changes, reads its VmRSS, RssAnon,
// RssFile (KiB) and CPU time, stops it, then does the same with the other.
// The order alternates by round (A B, B A, …) so that neither always runs
// first (the first pays for the apiserver's cold caches: ~2 s more CPU).
// It writes docs/bench/<file> with each series, its median and the
// paired (second minus first config, same round) differences of VmRSS,
// RssAnon and RssFile; extra goes into the file as it is.
func sideBySide(t *testing.T, prefix string, configs [2]agentConfig, rounds int, file string, extra map[string]any) {
	const npods, changes = 250, 200
	w := agentenv.New(t, prefix)
	pods := make([]*netlab.Pod, npods)
	for i := range pods {
		pods[i] = w.Lab.AddPod(fmt.Sprintf("p%d", i))
		ann := map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
		w.Pod(pods[i], fmt.Sprintf("p%d", i), map[string]string{"app": "scale"}, ann)
	}
	samples := map[string]map[string][]float64{}
	loads := []string{loadAvg()}
	for round := range rounds {
		for j := range configs {
			c := configs[(j+round)%len(configs)]
			ag := w.StartAgent(c.opts)
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
		loads = append(loads, loadAvg())
	}
	res := map[string]any{"pods": npods, "changes": changes, "rounds": rounds, "load": loads, "date": time.Now().UTC().Format(time.RFC3339)}
	for k, v := range extra {
		res[k] = v
	}
	for name, s := range samples {
		m := map[string]any{}
		for k, xs := range s {
			m[k+"_median"] = median(xs)
			m[k] = xs
		}
		res[name] = m
	}
	a, b := samples[configs[0].name], samples[configs[1].name]
	paired := map[string]any{"what": fmt.Sprintf("%s minus %s, same round (KiB)", configs[1].name, configs[0].name)}
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile"} {
		d := make([]float64, rounds)
		for r := range d {
			d[r] = b[k][r] - a[k][r]
		}
		paired[k] = d
		paired[k+"_median"] = median(d)
	}
	res["paired"] = paired
	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("figures:\n%s", out)
	if root, err := kubeenv.RepoRoot(); err == nil {
		if err := os.WriteFile(filepath.Join(root, "docs", "bench", file), append(out, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// median is the middle sample, the mean of the two middle ones of an even
// count.
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[n/2]
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b[:min(len(b), 14)])
}
