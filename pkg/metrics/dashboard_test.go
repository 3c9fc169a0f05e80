package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The Grafana dashboard (manifests/) queries only metrics that exist: the
// collector's, and the agent's own (cmd/kubeshaper-agent).
func TestDashboardQueriesKnownMetrics(t *testing.T) {
	b, err := os.ReadFile("../../manifests/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("manifests/grafana-dashboard.json: %v", err)
	}
	known := map[string]bool{
		"kubeshaper_agent_pods": true, "kubeshaper_agent_reconcile_errors_total": true,
		"kubeshaper_agent_queue_depth": true, "kubeshaper_agent_last_sync_timestamp_seconds": true,
		"kubeshaper_agent_flows_exported_total": true, "kubeshaper_agent_flow_export_errors_total": true,
		"kubeshaper_agent_flows_active": true,
	}
	ch := make(chan *prometheus.Desc, 64)
	New(nil, nil, nil, Options{}).Describe(ch)
	close(ch)
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		known[fq.FindStringSubmatch(d.String())[1]] = true
	}
	name := regexp.MustCompile(`kubeshaper_[a-z_]+`)
	used := 0
	check := func(where, expr string) {
		for _, n := range name.FindAllString(expr, -1) {
			used++
			if !known[n] {
				t.Errorf("%s queries %s, which nothing exports", where, n)
			}
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		check("variable", v.Definition)
	}
	if used < 10 {
		t.Errorf("only %d metric references in the dashboard", used)
	}
}
