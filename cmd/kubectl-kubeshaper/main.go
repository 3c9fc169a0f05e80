// Command kubectl-kubeshaper is the kubectl plugin (`kubectl kubeshaper`):
// the cluster-wide view of what kubeshaper does and checks of its
// annotations before they are applied.
//
//	kubectl kubeshaper status [-n NS | -A] [POD] [-o json|yaml|wide] [--timeout 2s]
//	kubectl kubeshaper explain POD [-n NS]
//	kubectl kubeshaper lint -f FILE|DIR|- ...
//
// status and explain ask every agent (or the pod's node's agent) for its
// /status through the API server's pod proxy: the caller needs `get` on
// pods/proxy in the agents' namespace (the chart's and manifests/'s
// ClusterRole kubeshaper-status-reader) and read access to the pods.
//
// Exit status: 0 ok; 1 lint found problems, or some node did not answer
// (what did answer is still printed, the others are listed); 2 bad usage
// or an error.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const usage = `kubectl kubeshaper: kubeshaper across the cluster.

Commands:
  status [-n NS | -A] [POD] [-o json|yaml|wide]   pods shaped or counted, from every agent
  explain POD [-n NS]                             a pod's effective rules and why
  lint -f FILE|DIR|- [-f ...]                     check kubeshaper annotations in manifests

Common flags: --kubeconfig FILE, --context NAME, --agent-namespace NS
(default kubeshaper-system), --timeout D (per node, default 3s).
`

// errFound makes the exit status 1 (lint problems, nodes that did not
// answer) after the output was written.
var errFound = errors.New("found problems")

// usageError makes the exit status 2 with the usage text.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errFound):
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kubectl-kubeshaper: %s\n\n%s", ue.msg, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "kubectl-kubeshaper: %v\n", err)
		return 2
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"a command is needed"}
	}
	switch args[0] {
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "explain":
		return explainCmd(args[1:], stdout)
	case "lint":
		return lintCmd(args[1:], stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}
