// Package kube watches the Kubernetes objects the agent reconciles: the
// pods scheduled to this node (field selector spec.nodeName) and the
// Services whose annotations their pods inherit. It turns every change
// into a pod key on a workqueue; it never acts on the node itself. Its
// API access is the narrow Client (client.go), not client-go's clientset.
package kube

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Watcher holds the informers and the queue of pod keys (namespace/name).
type Watcher struct {
	Queue    workqueue.TypedRateLimitingInterface[string]
	Pods     listersv1.PodLister
	Services listersv1.ServiceLister

	client    *Client
	resync    time.Duration
	informers []cache.SharedIndexInformer
	synced    []cache.InformerSynced
	// allPods lists every pod of the node, whether or not its namespace
	// is selected (Pods hides the others; see SelectNamespaces).
	allPods    listersv1.PodLister
	namespaces *namespaceFilter
	// endpointSlices is set by WatchEndpoints.
	endpointSlices discoverylisters.EndpointSliceLister
}

// NewWatcher sets up informers for pods on nodeName and for all Services.
// resync re-delivers every object periodically, so the reconciler also
// repairs state that changed behind its back (level-triggered).
func NewWatcher(client *Client, nodeName string, resync time.Duration) (*Watcher, error) {
	if nodeName == "" {
		return nil, fmt.Errorf("kube: the node name is empty: set --node-name or $NODE_NAME (the DaemonSet passes spec.nodeName)")
	}
	w := &Watcher{
		Queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
	}
	w.client, w.resync = client, resync
	sel := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	podInf := w.informer("pods", &corev1.Pod{}, func(o *metav1ListOptions) { o.FieldSelector = sel })
	svcInf := w.informer("services", &corev1.Service{}, func(*metav1ListOptions) {})
	w.allPods = listersv1.NewPodLister(podInf.GetIndexer())
	w.Pods, w.Services = w.allPods, listersv1.NewServiceLister(svcInf.GetIndexer())

	if err := podInf.SetTransform(slimPod); err != nil {
		return nil, err
	}
	if err := svcInf.SetTransform(slimService); err != nil {
		return nil, err
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.enqueuePod,
		UpdateFunc: func(_, obj any) { w.enqueuePod(obj) },
		DeleteFunc: w.enqueuePod,
	}); err != nil {
		return nil, err
	}
	if _, err := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: w.enqueueServicePods,
		UpdateFunc: func(old, obj any) {
			// A selector change moves pods in and out: requeue both sets.
			w.enqueueServicePods(old)
			w.enqueueServicePods(obj)
		},
		DeleteFunc: w.enqueueServicePods,
	}); err != nil {
		return nil, err
	}
	return w, nil
}

// informer makes a shared informer of a core/v1 resource (all namespaces)
// whose list and watch wait out an API outage (see patientLW).
func (w *Watcher) informer(resource string, obj runtime.Object, tweak func(*metav1ListOptions)) cache.SharedIndexInformer {
	lw := cache.NewFilteredListWatchFromClient(w.client.core, resource, metav1.NamespaceAll, tweak)
	inf := cache.NewSharedIndexInformer(patient(lw), obj, w.resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	w.informers = append(w.informers, inf)
	w.synced = append(w.synced, inf.HasSynced)
	return inf
}

// Start runs the informers until stop closes.
func (w *Watcher) Start(stop <-chan struct{}) {
	for _, inf := range w.informers {
		go inf.Run(stop)
	}
}

// WaitForSync blocks until both caches are filled (false if stop closed).
func (w *Watcher) WaitForSync(stop <-chan struct{}) bool {
	return cache.WaitForCacheSync(stop, w.synced...)
}

// HasSynced reports whether both caches are filled.
func (w *Watcher) HasSynced() bool {
	for _, s := range w.synced {
		if !s() {
			return false
		}
	}
	return true
}

func (w *Watcher) enqueuePod(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		w.Queue.Add(key)
	}
}

func (w *Watcher) enqueueServicePods(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	svc, ok := obj.(*corev1.Service)
	if !ok || len(svc.Spec.Selector) == 0 {
		return
	}
	pods, err := w.Pods.Pods(svc.Namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return
	}
	for _, p := range pods {
		w.enqueuePod(p)
	}
}

// ServicesFor returns the Services in the pod's namespace whose selector
// matches it, sorted by name (the order in which Service rules merge).
func (w *Watcher) ServicesFor(pod *corev1.Pod) ([]*corev1.Service, error) {
	all, err := w.Services.Services(pod.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return SelectingServices(pod, all), nil
}
