package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// TestAgentScale is the agent's benchmark (make bench; skipped otherwise):
// start-up reconcile of 250 netns pods, annotate→kernel-map latency over
// 200 changes, and the agent's RSS. It writes docs/bench/agent.json.
func TestAgentScale(t *testing.T) {
	if os.Getenv("KUBESHAPER_BENCH") == "" {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench)")
	}
	const npods, changes = 250, 200
	w := newWorld(t)
	pods := make([]*netlab.Pod, npods)
	start := time.Now()
	for i := range pods {
		pods[i] = w.lab.AddPod(fmt.Sprintf("p%d", i))
		ann := map[string]string{"kubeshaper.io/bandwidth": fmt.Sprintf("%dmbit egress", 10+i)}
		w.pod(pods[i], fmt.Sprintf("p%d", i), map[string]string{"app": "scale"}, ann)
	}
	t.Logf("created %d netns pods and Pod objects in %v", npods, time.Since(start))

	res := map[string]any{"pods": npods, "changes": changes}
	ag := w.startAgent(false)
	res["startup_reconcile_ms"] = startupTook(t, ag)
	res["rss_after_start_kib"] = rssKiB(t, ag)
	w.waitRate(pods[npods-1], rules.Egress, uint64(10+npods-1)*1e6)

	// Annotate → rule in the kernel map, one change at a time.
	dp, err := datapath.Open(w.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var lat []time.Duration
	for i := range changes {
		p := pods[i%npods]
		key := datapath.KeyOf(w.ifindex(p), rules.Egress)
		want := uint64(1000+i) * 1e6
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"kubeshaper.io/bandwidth":"%dmbit egress"}}}`, 1000+i)
		t0 := time.Now()
		if _, err := w.cs.CoreV1().Pods(w.ns).Patch(context.Background(), fmt.Sprintf("p%d", i%npods), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
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

	// A restart adopts 250 pinned rules.
	ag.stop(t)
	ag = w.startAgent(true)
	res["restart_reconcile_ms"] = startupTook(t, ag)
	took := ag.stop(t)
	res["cleanup_250_pods_ms"] = ms(took)
	if n := w.entries(); n != 0 {
		t.Errorf("%d map entries left after cleanup", n)
	}

	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("agent figures:\n%s", out)
	if root, err := kubeenv.RepoRoot(); err == nil {
		os.MkdirAll(filepath.Join(root, "docs", "bench"), 0o755)
		os.WriteFile(filepath.Join(root, "docs", "bench", "agent.json"), append(out, '\n'), 0o644)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// startupTook reads the agent's own "start-up reconcile done" log line.
func startupTook(t *testing.T, a *agent) float64 {
	t.Helper()
	f, err := os.Open(a.log.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "start-up reconcile done") {
			continue
		}
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "took="); ok {
				d, err := time.ParseDuration(strings.Trim(v, `"`))
				if err == nil {
					return ms(d)
				}
			}
		}
	}
	t.Fatal("no start-up reconcile line in the agent's log")
	return 0
}

func rssKiB(t *testing.T, a *agent) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}
