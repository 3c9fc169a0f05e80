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

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// TestAgentScale is the agent's benchmark (make bench; skipped otherwise):
// start-up reconcile of 250 netns pods, annotate→kernel-map latency over
// 200 changes, and the agent's RSS. It writes docs/bench/agent.json.
func TestAgentScale(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench)")
	}
	const npods, changes = 250, 200
	w := agentenv.New(t, "ab")
	pods := make([]*netlab.Pod, npods)
	start := time.Now()
	for i := range pods {
		pods[i] = w.Lab.AddPod(fmt.Sprintf("p%d", i))
		ann := map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
		w.Pod(pods[i], fmt.Sprintf("p%d", i), map[string]string{"app": "scale"}, ann)
	}
	t.Logf("created %d netns pods and Pod objects in %v", npods, time.Since(start))

	res := map[string]any{"pods": npods, "changes": changes}
	ag := w.StartAgent(agentenv.Options{})
	res["startup_reconcile_ms"] = startupTook(t, ag)
	res["rss_after_start_kib"] = rssKiB(t, ag)
	w.WaitRate(pods[npods-1], rules.Egress, uint64(10+npods-1)*1e6)

	// Annotate → rule in the kernel map, one change at a time.
	dp, err := datapath.Open(w.PinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var lat []time.Duration
	for i := range changes {
		p := pods[i%npods]
		key := datapath.KeyOf(w.Ifindex(p), rules.Egress)
		want := uint64(1000+i) * 1e6
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"kubeshaper.io/bandwidth":"%dmbit egress"}}}`, 1000+i)
		t0 := time.Now()
		if _, err := w.CS.CoreV1().Pods(w.NS).Patch(context.Background(), fmt.Sprintf("p%d", i%npods), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		for {
			c, ok, err := dp.Lookup(key)
			if err != nil {
				t.Fatal(err)
			}
			if ok && c.RateBits() == want {
				break
			}
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("change %d not in the map after 10 s", i)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res["annotate_to_map_p50_ms"] = ms(lat[len(lat)/2])
	res["annotate_to_map_p99_ms"] = ms(lat[len(lat)*99/100])
	res["annotate_to_map_max_ms"] = ms(lat[len(lat)-1])
	res["rss_after_changes_kib"] = rssKiB(t, ag)
	// What the RSS is made of: the binary's pages (file) and the Go heap,
	// stacks and runtime (anonymous).
	if st, err := ag.ProcStatus(); err == nil {
		res["rss_anon_after_changes_kib"] = st["RssAnon"]
		res["rss_file_after_changes_kib"] = st["RssFile"]
	}

	// A restart adopts 250 pinned rules.
	ag.Stop(t)
	ag = w.StartAgent(agentenv.Options{CleanupOnExit: true})
	res["restart_reconcile_ms"] = startupTook(t, ag)
	took := ag.Stop(t)
	res["cleanup_250_pods_ms"] = ms(took)
	if n := w.Entries(); n != 0 {
		t.Errorf("%d map entries left after cleanup", n)
	}

	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("agent figures:\n%s", out)
	if root, err := kubeenv.RepoRoot(); err == nil {
		os.MkdirAll(filepath.Join(root, "docs", "bench"), 0o755)
		// bench-cni measures the same with its own code in the same run
		// and keeps it apart (KUBESHAPER_AGENT_JSON).
		name := "agent.json"
		if v := os.Getenv("KUBESHAPER_AGENT_JSON"); v != "" {
			name = v
		}
		os.WriteFile(filepath.Join(root, "docs", "bench", name), append(out, '\n'), 0o644)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startupTook reads the agent's own "start-up reconcile done" log line.
func startupTook(t *testing.T, a *agentenv.Agent) float64 {
	t.Helper()
	d, err := a.StartupTook()
	if err != nil {
		t.Fatal(err)
	}
	return ms(d)
}

func rssKiB(t *testing.T, a *agentenv.Agent) int {
	t.Helper()
	n, err := a.RSSKiB()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
