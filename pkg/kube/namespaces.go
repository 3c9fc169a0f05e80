package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// SelectNamespaces restricts the agent to pods whose namespace's labels
// match sel (--namespace-selector): an operator's opt-in to keep the agent
// away from some namespaces. Pods elsewhere are hidden from Pods — the
// reconciler sees them as it sees deleted pods, so it removes anything it
// had applied to them and then leaves them alone: no filter, no map entry
// (so no counting either), no Event, even when annotated. When a
// namespace's labels change (or it is created or deleted), its pods are
// queued again, and shaped or released accordingly.
//
// It watches Namespaces with sel as a server-side label selector (the
// apiserver reports a namespace that stops matching as deleted), which
// needs list and watch on namespaces. Call it before Start; without it
// every namespace is selected.
func (w *Watcher) SelectNamespaces(sel labels.Selector) error {
	if w.namespaces != nil {
		return fmt.Errorf("kube: SelectNamespaces called twice")
	}
	inf := w.informer("namespaces", &corev1.Namespace{}, func(o *metav1ListOptions) { o.LabelSelector = sel.String() })
	if err := inf.SetTransform(slimNamespace); err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: w.enqueueNamespacePods,
		UpdateFunc: func(old, obj any) {
			if !labels.Equals(nsLabels(old), nsLabels(obj)) {
				w.enqueueNamespacePods(obj)
			}
		},
		DeleteFunc: w.enqueueNamespacePods,
	}); err != nil {
		return err
	}
	w.namespaces = &namespaceFilter{sel: sel, lister: listersv1.NewNamespaceLister(inf.GetIndexer())}
	w.Pods = selectedPods{all: w.allPods, f: w.namespaces}
	return nil
}

// NamespaceSelected reports whether pods of namespace ns may be shaped.
func (w *Watcher) NamespaceSelected(ns string) bool {
	return w.namespaces == nil || w.namespaces.selected(ns)
}

type namespaceFilter struct {
	sel    labels.Selector
	lister listersv1.NamespaceLister
}

func (f *namespaceFilter) selected(ns string) bool {
	n, err := f.lister.Get(ns)
	// The cache holds only matching namespaces; checking again costs
	// nothing and guards against a server that ignored the selector.
	return err == nil && f.sel.Matches(labels.Set(n.Labels))
}

func (w *Watcher) enqueueNamespacePods(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	pods, err := w.allPods.Pods(ns.Name).List(labels.Everything())
	if err != nil {
		return
	}
	for _, p := range pods {
		w.enqueuePod(p)
	}
}

func nsLabels(obj any) labels.Set {
	if ns, ok := obj.(*corev1.Namespace); ok {
		return ns.Labels
	}
	return nil
}

// slimNamespace keeps a namespace's name and labels.
func slimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	out := &corev1.Namespace{TypeMeta: n.TypeMeta, ObjectMeta: n.ObjectMeta}
	out.ManagedFields = nil
	out.Annotations = nil
	return out, nil
}

// selectedPods is a PodLister that sees only pods of selected namespaces.
type selectedPods struct {
	all listersv1.PodLister
	f   *namespaceFilter
}

func (s selectedPods) List(sel labels.Selector) ([]*corev1.Pod, error) {
	all, err := s.all.List(sel)
	if err != nil {
		return nil, err
	}
	out := all[:0:0]
	for _, p := range all {
		if s.f.selected(p.Namespace) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (s selectedPods) Pods(ns string) listersv1.PodNamespaceLister {
	if !s.f.selected(ns) {
		return noPods{}
	}
	return s.all.Pods(ns)
}

// noPods is the view of a namespace that is not selected.
type noPods struct{}

func (noPods) List(labels.Selector) ([]*corev1.Pod, error) { return nil, nil }

func (noPods) Get(name string) (*corev1.Pod, error) {
	return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
}
