package agentbench

import (
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bench"
)

// TestAgentGCPercent (make bench-agent-gc; skipped otherwise) measures the
// agent's memory at 250 pods after 200 annotation changes with Go's
// default GOGC=100 and with the agent's own default (GOGC unset: 50,
// cmd/kubeshaper-agent/runtime.go), side by side (sideBySide), 4 rounds; it
// writes docs/bench/agent-gc.json.
func TestAgentGCPercent(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench-agent-gc)")
	}
	sideBySide(t, "ag", [2]agentConfig{
		{"GOGC=100", agentenv.Options{Env: []string{"GOGC=100"}}},
		{"agent default (50)", agentenv.Options{}},
	}, 4, "agent-gc.json", nil)
}
