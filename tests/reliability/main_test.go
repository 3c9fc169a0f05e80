// Package reliability proves kubeshaper-agent deployable: pod
// churn without leaks, a kill -9 mid-reconcile, an API outage, hostile
// annotations, kernel faults, least privilege and graceful shutdown. Each
// test runs the real agent as a process against a real kube-apiserver with
// netns pods (tests/agentenv) and logs its figures in one line.
//
// `make test` runs the CI-sized versions; `make churn` the 10,000-cycle
// churn and `make fuzz-long` the long fuzzing (see the Makefile).
package reliability

import (
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
)

func TestMain(m *testing.M) { agentenv.Main(m) }
