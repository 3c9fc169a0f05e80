// Command kubeshaper-agent is the node agent a DaemonSet runs: it watches
// the pods on its node and reconciles their annotations into the datapath.
// (The Kubernetes half lands with the agent issue; this binary is its home.)
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "kubeshaper-agent: the Kubernetes watcher is not built yet; use the node CLI `kubeshaper` meanwhile")
	os.Exit(2)
}
