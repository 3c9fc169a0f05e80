package main

import (
	"os/exec"
	"strings"
	"testing"
)

// apiGroupsUsed are the only k8s.io/api packages the agent may link: the
// groups pkg/kube's Client and scheme serve.
var apiGroupsUsed = map[string]bool{
	"k8s.io/api/core/v1":      true,
	"k8s.io/api/discovery/v1": true,
}

// TestAgentImportsNoClientset fails when the agent links client-go's
// clientset (k8s.io/client-go/kubernetes/...), its apply configurations or
// any API group it does not use. Each of those pulls in, and registers at
// init, every API group: ~8 MB more resident memory per node (README,
// "Memory on a node"). It costs one `go list` (~1 s with a warm cache).
func TestAgentImportsNoClientset(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH: cannot list the agent's dependencies")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed %d packages, too few to be the agent's: %q", len(deps), deps)
	}
	var bad []string
	for _, p := range deps {
		switch {
		case strings.HasPrefix(p, "k8s.io/client-go/kubernetes"),
			strings.HasPrefix(p, "k8s.io/client-go/applyconfigurations"),
			strings.HasPrefix(p, "k8s.io/api/") && !apiGroupsUsed[p]:
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("the agent links %d packages it must not (use pkg/kube.Client, or add the group to its scheme and to apiGroupsUsed):\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}
