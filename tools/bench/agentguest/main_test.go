// Package agentguest runs the real kubeshaper-agent in a qemu guest with
// many CPUs (tools/kernels, KERNELS_APISERVER), under the DaemonSet's
// memory limit, with 250 pods' rules applied, against a kube-apiserver on
// the host (a TCG guest cannot start one in useful time): `make
// bench-agent-guest`, a benchmark (KUBESHAPER_BENCH) that CI does not run.
// It writes docs/bench/agent-guest.json.
package agentguest

import (
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
)

func TestMain(m *testing.M) { agentenv.Main(m) }
