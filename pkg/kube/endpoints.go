package kube

import (
	"net/netip"
	"sort"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// WatchEndpoints adds an informer of EndpointSlices (discovery.k8s.io/v1,
// all namespaces; RBAC list and watch) so that rules targeting a Service
// (to=svc:namespace/name) follow its endpoints as the Service scales.
// onChange gets the Service of every slice added, changed or deleted.
// Call it before Start; WaitForSync then also waits for its cache.
func (w *Watcher) WatchEndpoints(onChange func(namespace, name string)) error {
	lw := cache.NewFilteredListWatchFromClient(w.client.disco, "endpointslices", metav1.NamespaceAll, func(*metav1ListOptions) {})
	inf := cache.NewSharedIndexInformer(patient(lw), &discoveryv1.EndpointSlice{}, w.resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := inf.SetTransform(slimEndpointSlice); err != nil {
		return err
	}
	notify := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
				onChange(s.Namespace, svc)
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return err
	}
	w.endpointSlices = discoverylisters.NewEndpointSliceLister(inf.GetIndexer())
	w.informers = append(w.informers, inf)
	w.synced = append(w.synced, inf.HasSynced)
	return nil
}

// ServiceAddresses lists the addresses that stand for a Service as a peer:
// its cluster IPs (what a client dials, before kube-proxy translates them
// past the pod's host veth) and every endpoint address of its
// EndpointSlices, ready or not. Sorted; none for an unknown Service.
func (w *Watcher) ServiceAddresses(namespace, name string) []netip.Addr {
	seen := map[netip.Addr]bool{}
	if svc, err := w.Services.Services(namespace).Get(name); err == nil {
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				seen[a.Unmap()] = true
			}
		}
	}
	if w.endpointSlices != nil {
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name})
		slices, _ := w.endpointSlices.EndpointSlices(namespace).List(sel)
		for _, s := range slices {
			for _, ep := range s.Endpoints {
				for _, ip := range ep.Addresses {
					if a, err := netip.ParseAddr(ip); err == nil {
						seen[a.Unmap()] = true
					}
				}
			}
		}
	}
	out := make([]netip.Addr, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// slimEndpointSlice keeps the Service label and the endpoint addresses.
func slimEndpointSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		TypeMeta:    s.TypeMeta,
		ObjectMeta:  metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels, ResourceVersion: s.ResourceVersion, UID: s.UID},
		AddressType: s.AddressType,
	}
	for _, ep := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: ep.Addresses})
	}
	return out, nil
}
