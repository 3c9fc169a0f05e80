package rules

// Merge computes a pod's effective policy from the policies of the Services
// that select it and the pod's own. For each kind of rule (bandwidth, loss,
// delay, program) and each direction, the pod's own rule wins; otherwise the
// first Service in the slice that has one provides it. Callers must pass the
// Services in a stable order — sorted by name — so that the result does not
// depend on informer order. Kinds combine: a Service's loss and the pod's
// bandwidth both apply. The result shares no memory with the inputs.
func Merge(services []Policy, pod Policy) Policy {
	out := pod.Clone()
	for _, s := range services {
		for _, d := range Directions {
			out[d].fillFrom(s[d])
		}
	}
	return out
}
