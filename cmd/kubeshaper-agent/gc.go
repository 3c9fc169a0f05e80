package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the agent's GOGC unless the environment sets one.
// The agent's live heap is small (~3 MB at 250 pods, informers slimmed by
// pkg/kube's transforms) and Go's default of 100 lets the heap grow to
// twice that plus the runtime's slack before collecting: at 250 pods the
// agent's anonymous memory was 14.5 MB with 100 and 10.5–11 MB with 50
// (tools/bench/agentbench, docs/bench/agent.json), for a collection
// every few seconds of a 3 MB heap — CPU that does not show beside the
// informers' decoding.
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent; GOGC in the environment (the Go
// runtime reads it itself) takes precedence, so an operator can undo it.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
