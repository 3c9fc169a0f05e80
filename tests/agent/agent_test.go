// Package agent tests kubeshaper-agent end to end against a real
// kube-apiserver + etcd (tests/kubeenv), with pods that are real network
// namespaces behind veths in a "node" netns (tests/netlab). The agent runs
// as its own process, as the DaemonSet runs it (tests/agentenv).
package agent

import (
	"testing"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
)

func TestMain(m *testing.M) { agentenv.Main(m) }

func newWorld(t *testing.T) *agentenv.World { return agentenv.New(t, "ag") }

var (
	keepRules    = agentenv.Options{}
	cleanupRules = agentenv.Options{CleanupOnExit: true}
)
