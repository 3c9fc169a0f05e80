package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the agent's GOGC unless the environment sets one.
// The agent's live heap is small (~3 MB at 250 pods, informers slimmed by
// pkg/kube's transforms) and Go's default of 100 lets the heap grow to
// twice that plus the runtime's slack before collecting: at 250 pods the
// agent's VmRSS was 42.1 MB with 100 and 39.9 MB with 50, anonymous
// memory 14.4 and 12.1 MB (medians of 4 rounds side by side, make
// bench-agent-gc, docs/bench/agent-gc.json), for collections of a 3 MB
// heap — CPU that does not show beside the informers' decoding.
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent; GOGC in the environment (the Go
// runtime reads it itself) takes precedence, so an operator can undo it.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}
