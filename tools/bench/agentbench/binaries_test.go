package agentbench

import (
	"os"
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bench"
)

// Set by make bench-agent-vs: the agent binary built from another commit
// and that commit's name.
const (
	envBaseBinary = "KUBESHAPER_AGENT_BASE_BIN"
	envBaseRev    = "KUBESHAPER_AGENT_BASE_REV"
)

// TestAgentBinaries (make bench-agent-vs BASE=<commit>; skipped otherwise)
// compares this tree's agent with one built from BASE, side by side
// (sideBySide), 6 rounds, both with the same flags and environment; it
// writes docs/bench/agent-vs.json. Made for changes to what the binary
// links (its file pages are most of its RSS).
func TestAgentBinaries(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: run with KUBESHAPER_BENCH=1 (make bench-agent-vs)")
	}
	base := os.Getenv(envBaseBinary)
	if base == "" {
		t.Skipf("$%s names no agent binary to compare with (make bench-agent-vs BASE=<commit> builds one)", envBaseBinary)
	}
	if _, err := os.Stat(base); err != nil {
		t.Fatalf("$%s: %v", envBaseBinary, err)
	}
	rev := os.Getenv(envBaseRev)
	sideBySide(t, "av", [2]agentConfig{
		{"base " + rev, agentenv.Options{Binary: base}},
		{"this tree", agentenv.Options{}},
	}, 6, "agent-vs.json", map[string]any{"base": rev})
}
