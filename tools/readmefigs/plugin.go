package main

import (
	"os"
	"strings"
)

// pluginStatus is what the real-node e2e wrote with KUBESHAPER_FIGURES=1
// (make plugin-figures): `kubectl kubeshaper status -A` beside the agent's
// own status, and an explain.
func pluginStatus() (string, error) {
	b, err := os.ReadFile("docs/bench/plugin-status.md")
	return string(b), err
}

// lintRun is `kubectl kubeshaper lint` on the test directory of good and
// bad manifests, with its exit status (make plugin-figures).
func lintRun() (string, error) {
	b, err := os.ReadFile("docs/bench/lint.txt")
	if err != nil {
		return "", err
	}
	return "```\n" + strings.TrimRight(string(b), "\n") + "\n```\n", nil
}
