package reconcile

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// MonitorAnnotation opts a pod out of being counted when set to "false".
const MonitorAnnotation = rules.Prefix + "monitor"

// Desired is what a pod should carry, and what was wrong on the way.
type Desired struct {
	Policy rules.Policy
	// PodErrors are invalid annotations on the pod itself.
	PodErrors []*rules.AnnotationError
	// ServiceErrors are invalid annotations per selecting Service name.
	ServiceErrors map[string][]*rules.AnnotationError
	// Monitor is false when the pod opted out of counting.
	Monitor bool
	// Sources are the objects Policy merges, Services (by name) then the
	// pod, each with its own rules and time limit (kubeshaper.io/until,
	// kubeshaper.io/duration end the rules of the object they are on).
	Sources []Source
}

// Source is one object's part of a pod's policy.
type Source struct {
	Kind   string // "Pod" or "Service"
	Name   string
	UID    types.UID
	Policy rules.Policy
	Limit  rules.TimeLimit
}

// DesiredFor computes a pod's policy from its own annotations and those of
// the Services selecting it (sorted by name: the first Service wins a
// conflict, the pod beats them all). Invalid keys are left out and
// reported; valid ones still apply. Pure: no I/O.
func DesiredFor(pod *corev1.Pod, svcs []*corev1.Service) Desired {
	d := Desired{Monitor: !strings.EqualFold(pod.Annotations[MonitorAnnotation], "false")}
	var inherited []rules.Policy
	for _, s := range svcs {
		p, errs := rules.ParseAnnotations(s.Annotations)
		lim, lerrs := rules.ParseTimeLimit(s.Annotations)
		if errs = append(errs, lerrs...); len(errs) > 0 {
			if d.ServiceErrors == nil {
				d.ServiceErrors = map[string][]*rules.AnnotationError{}
			}
			d.ServiceErrors[s.Name] = errs
		}
		// svc:name in a target means the annotated object's namespace.
		p = p.WithServiceNamespace(s.Namespace)
		inherited = append(inherited, p)
		d.Sources = append(d.Sources, Source{Kind: "Service", Name: s.Name, UID: s.UID, Policy: p, Limit: lim})
	}
	own, errs := rules.ParseAnnotations(pod.Annotations)
	lim, lerrs := rules.ParseTimeLimit(pod.Annotations)
	own = own.WithServiceNamespace(pod.Namespace)
	d.PodErrors = append(errs, lerrs...)
	d.Policy = rules.Merge(inherited, own)
	d.Sources = append(d.Sources, Source{Kind: "Pod", Name: pod.Name, UID: pod.UID, Policy: own, Limit: lim})
	return d
}

// HasKubeshaperAnnotations reports whether the object asks kubeshaper for
// anything (used to decide whether a skipped pod deserves an Event).
func HasKubeshaperAnnotations(ann map[string]string) bool {
	for k := range ann {
		if rules.IsOwnKey(k) {
			return true
		}
	}
	return false
}
