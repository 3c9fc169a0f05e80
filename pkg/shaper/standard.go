package shaper

import (
	"fmt"
	"os"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
)

// CiliumThrottleMap is the pinned map of Cilium's bandwidth manager (its
// EDT rates per endpoint for kubernetes.io/egress-bandwidth): present on a
// node where that manager runs.
const CiliumThrottleMap = "/sys/fs/bpf/tc/globals/cilium_throttle"

// otherBandwidthEnforcer looks for another tool that enforces the standard
// kubernetes.io/{in,e}gress-bandwidth annotations on this pod: the CNI
// bandwidth plugin (a tbf root qdisc on the host veth — pod ingress — and
// an ingress qdisc on it whose traffic is mirred to an ifb — pod egress),
// or Cilium's bandwidth manager. Runs in the node netns.
func otherBandwidthEnforcer(ifc Interface) string {
	if kind, handle, err := attach.RootQdisc(ifc.Index); err == nil && kind == "tbf" && handle != attach.QdiscHandle {
		return fmt.Sprintf("a tbf root qdisc (handle %#x) on %s, as the CNI bandwidth plugin installs", handle, ifc.Name)
	}
	if ok, _ := attach.MirredToIFB(ifc.Index); ok {
		return fmt.Sprintf("a filter on %s mirroring to an ifb, as the CNI bandwidth plugin installs", ifc.Name)
	}
	if _, err := os.Stat(CiliumThrottleMap); err == nil {
		return "Cilium's bandwidth manager (" + CiliumThrottleMap + " is pinned)"
	}
	return ""
}
