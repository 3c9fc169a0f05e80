package attach

import (
	"fmt"

	tc "github.com/florianl/go-tc"
	"github.com/florianl/go-tc/core"
)

// Hook is one of the two clsact hooks of an interface.
type Hook int

const (
	// HookIngress is tc ingress: packets the interface receives. On a
	// pod's host-side veth these are the packets the pod sends (pod
	// egress).
	HookIngress Hook = iota
	// HookEgress is tc egress: packets the interface transmits. On a pod's
	// host-side veth these are the packets the pod receives (pod ingress).
	HookEgress
)

// Hooks lists both hooks.
var Hooks = [2]Hook{HookIngress, HookEgress}

func (h Hook) String() string {
	switch h {
	case HookIngress:
		return "ingress"
	case HookEgress:
		return "egress"
	}
	return fmt.Sprintf("Hook(%d)", int(h))
}

// parent is the clsact parent handle of the hook: ffff:fff2 or ffff:fff3.
func (h Hook) parent() (uint32, error) {
	switch h {
	case HookIngress:
		return core.BuildHandle(tc.HandleRoot, tc.HandleMinIngress), nil
	case HookEgress:
		return core.BuildHandle(tc.HandleRoot, tc.HandleMinEgress), nil
	}
	return 0, fmt.Errorf("unknown hook %d", int(h))
}
