package reconcile

import (
	"fmt"
	"net"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// The standard kubernetes.io/{in,e}gress-bandwidth annotations may already
// be enforced by another tool: the CNI bandwidth plugin (tbf on the host
// veth, an ifb for egress) or Cilium's bandwidth manager. A second limit
// on the same keys would stack (two buckets, two queues). Options.
// StandardAnnotations says what kubeshaper does with them.
const (
	StandardAuto = "auto" // step back where another enforcer is found
	StandardOn   = "on"   // always enforce them
	StandardOff  = "off"  // never: kubeshaper.io/* keys only
)

// ParseStandardAnnotations checks the agent's --standard-annotations.
func ParseStandardAnnotations(v string) (string, error) {
	switch v {
	case StandardAuto, StandardOn, StandardOff:
		return v, nil
	case "":
		return StandardAuto, nil
	}
	return "", fmt.Errorf("--standard-annotations %q: want auto (step back from kubernetes.io/{in,e}gress-bandwidth where the CNI bandwidth plugin or Cilium's bandwidth manager enforces them), on or off", v)
}

// ReasonSteppedBack is the Event of a pod whose standard bandwidth
// annotations kubeshaper leaves to another enforcer.
const ReasonSteppedBack = "StandardAnnotationsLeft"

// BandwidthEnforcerDetector finds another enforcer of the standard keys
// on a pod's interface; *shaper.Node has it.
type BandwidthEnforcerDetector interface {
	OtherBandwidthEnforcer(ifc shaper.Interface) string
}

var _ BandwidthEnforcerDetector = (*shaper.Node)(nil)

// standardKeys returns the pod to derive rules from: as it is, or a copy
// without the standard bandwidth keys when kubeshaper steps back from
// them (off; auto with another enforcer found, posted as an Event).
func (r *Reconciler) standardKeys(key string, pod *corev1.Pod) *corev1.Pod {
	_, eg := pod.Annotations[rules.KeyEgressBandwidth]
	_, in := pod.Annotations[rules.KeyIngressBandwidth]
	mode := r.opts.StandardAnnotations
	if (!eg && !in) || mode == StandardOn {
		return pod
	}
	if mode != StandardOff {
		det, ok := r.node.(BandwidthEnforcerDetector)
		if !ok {
			return pod
		}
		r.mu.Lock()
		st := r.applied[key]
		r.mu.Unlock()
		var ifc shaper.Interface
		if st != nil && st.uid == pod.UID {
			ifc = st.ifc
		} else {
			ip := net.ParseIP(pod.Status.PodIP)
			if ip == nil {
				return pod
			}
			var err error
			if ifc, err = r.node.Resolve(ip); err != nil {
				return pod // ensure reports it
			}
		}
		who := det.OtherBandwidthEnforcer(ifc)
		if who == "" {
			r.warnIfNew(pod, ReasonSteppedBack, "", "")
			return pod
		}
		r.warnOnce(pod, ReasonSteppedBack, fmt.Sprintf("kubernetes.io/egress-bandwidth and kubernetes.io/ingress-bandwidth are already enforced here by %s: kubeshaper leaves them to it (no double limit; kubeshaper.io/* rules still apply; --standard-annotations=on forces them)", who))
	}
	cp := pod.DeepCopy()
	delete(cp.Annotations, rules.KeyEgressBandwidth)
	delete(cp.Annotations, rules.KeyIngressBandwidth)
	return cp
}
