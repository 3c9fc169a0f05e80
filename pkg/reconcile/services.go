package reconcile

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// followServices makes rules that target a Service (to=svc:ns/name) use
// its current addresses, and re-applies them when its EndpointSlices
// change (a Deployment scales, a pod is replaced).
func (r *Reconciler) followServices() {
	r.node.UseServicePeers(r.servicePeers)
	if err := r.w.WatchEndpoints(r.servicesChanged); err != nil {
		r.log.WithError(err).Warn("watching EndpointSlices: rules targeting a Service will not follow its endpoints")
	}
}

// servicePeers resolves a Service to its cluster IPs and endpoints.
func (r *Reconciler) servicePeers(ref rules.ServiceRef) []netip.Prefix {
	addrs := r.w.ServiceAddresses(ref.Namespace, ref.Name)
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}

// serviceDigest describes the addresses of every Service the policy
// targets; a change makes ensure apply again.
func (r *Reconciler) serviceDigest(pol rules.Policy) string {
	refs := pol.Services()
	if len(refs) == 0 {
		return ""
	}
	var b strings.Builder
	for _, ref := range refs {
		b.WriteString(ref.String() + "=")
		for _, a := range r.w.ServiceAddresses(ref.Namespace, ref.Name) {
			b.WriteString(a.String() + ",")
		}
		b.WriteString(";")
	}
	return b.String()
}

// servicesChanged queues the pods whose applied rules target the Service.
func (r *Reconciler) servicesChanged(namespace, name string) {
	ref := rules.ServiceRef{Namespace: namespace, Name: name}
	var keys []string
	r.mu.Lock()
	for key, st := range r.applied {
		if slices.Contains(st.policy.Services(), ref) {
			keys = append(keys, key)
		}
	}
	r.mu.Unlock()
	for _, k := range keys {
		r.w.Queue.Add(k)
	}
}
