// Package reconcile drives every pod on the node to the datapath state its
// annotations ask for: desired state (pure, from pkg/rules) against actual
// state (what this process applied, checked against the kernel's maps and
// filters), idempotent and level-triggered. It adopts what a previous agent
// left pinned and removes what no pod wants any more.
package reconcile

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// Event reasons.
const (
	ReasonApplied           = "Applied"
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonApplyFailed       = "ApplyFailed"
	ReasonNotShapeable      = "NotShapeable"
)

// Options configure a Reconciler.
type Options struct {
	// RetryNotReady is how soon a pod whose netns is not up yet is retried.
	RetryNotReady time.Duration
	// StandardAnnotations: auto (default), on or off (standard.go).
	StandardAnnotations string
}

// podState is what this process applied to one pod.
type podState struct {
	uid    types.UID
	ip     string
	ifc    shaper.Interface
	policy rules.Policy
	// progs are the custom-program filter names the policy asked for
	// (programWant), progUp those attached ("" where none or it failed).
	progs, progUp [2]string
	// svcPeers are the addresses of the Services the rules target, as
	// applied (serviceDigest).
	svcPeers string
}

// Reconciler applies desired state pod by pod.
type Reconciler struct {
	pacingWarned atomic.Bool
	w            *kube.Watcher
	node         Node
	events       record.EventRecorder
	log          *logrus.Entry
	opts         Options

	// gcMu lets pods be reconciled in parallel (read side) while leftover
	// collection and cleanup, which judge what no pod claims, run alone.
	gcMu sync.RWMutex
	// mu guards the maps below; it is never held across kernel work.
	mu      sync.Mutex
	applied map[string]*podState
	// posted remembers the last warning text per object and reason, so a
	// resync does not post the same Event again (no storms).
	posted map[string]string

	// hold is the position holder's state (position.go).
	hold holder

	counters
}

// New returns a Reconciler of the pods w watches, acting on node; Run
// starts it.
func New(w *kube.Watcher, node Node, events record.EventRecorder, log *logrus.Entry, opts Options) *Reconciler {
	if opts.RetryNotReady == 0 {
		opts.RetryNotReady = time.Second
	}
	if opts.StandardAnnotations == "" {
		opts.StandardAnnotations = StandardAuto
	}
	r := &Reconciler{
		w: w, node: node,
		events: events, log: log, opts: opts,
		applied: map[string]*podState{}, posted: map[string]string{},
		hold: holder{pos: map[string]*position{}},
	}
	r.followServices()
	return r
}

// Sync drives one pod (namespace/name) to its desired state.
func (r *Reconciler) Sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // a malformed key will never become valid
	}
	pod, err := r.w.Pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return r.remove(key)
	}
	if err != nil {
		return err
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return r.remove(key)
	}
	if pod.Spec.HostNetwork {
		if HasKubeshaperAnnotations(pod.Annotations) {
			r.warnOnce(pod, ReasonNotShapeable, "pod uses hostNetwork: it has no veth of its own, so kubeshaper cannot shape or count it")
		}
		return r.remove(key)
	}
	if pod.Status.PodIP == "" {
		return nil // its status update will bring it back
	}
	svcs, err := r.w.ServicesFor(pod)
	if err != nil {
		return err
	}
	pod = r.standardKeys(key, pod)
	want := DesiredFor(pod, svcs)
	r.reportInvalid(pod, svcs, want)
	pol, ended, err := r.effective(key, pod, want)
	if err != nil {
		return err
	}
	if !want.Monitor && pol.IsEmpty() {
		err = r.remove(key)
	} else {
		err = r.ensure(key, pod, pol)
	}
	if err == nil {
		r.announce(pod, ended)
	}
	return err
}

func (r *Reconciler) ensure(key string, pod *corev1.Pod, want rules.Policy) error {
	ip := net.ParseIP(pod.Status.PodIP)
	if ip == nil {
		return nil
	}
	r.gcMu.RLock()
	defer r.gcMu.RUnlock()
	defer r.lockPod(key)()
	r.mu.Lock()
	st := r.applied[key]
	r.mu.Unlock()
	sameSandbox := st != nil && st.uid == pod.UID && st.ip == pod.Status.PodIP
	svcPeers := r.serviceDigest(want)
	if sameSandbox && st.policy.Equal(want) && st.svcPeers == svcPeers && r.node.Intact(st.ifc) && r.programsIntact(st, want) {
		return nil
	}
	var ifc shaper.Interface
	if sameSandbox && r.node.Exists(st.ifc) {
		ifc = st.ifc
	} else {
		var err error
		ifc, err = r.node.Resolve(ip)
		if errors.Is(err, shaper.ErrNetnsNotFound) {
			// The IP is in the API before the sandbox is up, or the
			// sandbox is being torn down: retry, it is not a failure.
			r.w.Queue.AddAfter(key, r.opts.RetryNotReady)
			return nil
		}
		if errors.Is(err, shaper.ErrNotVeth) {
			r.warnOnce(pod, ReasonNotShapeable, fmt.Sprintf("the pod's interface holding %s is not a veth: kubeshaper shapes veth-based pods only (%v)", ip, err))
			return nil
		}
		if errors.Is(err, shaper.ErrAmbiguousIP) {
			// Another netns (a stale sandbox, a container outside
			// Kubernetes) holds the same address behind a host veth:
			// shaping a guess could throttle the wrong workload. Say so,
			// retry with backoff (the stale one may go).
			r.warnOnce(pod, ReasonNotShapeable, fmt.Sprintf("cannot tell which network namespace is the pod's: %v", err))
		}
		if err != nil {
			return fmt.Errorf("resolving %s's host veth: %w", key, err)
		}
	}
	if st != nil && st.ifc.Index != ifc.Index {
		// A new sandbox: what the old one carried goes with it.
		if err := r.node.Clear(st.ifc); err != nil {
			r.log.WithError(err).WithField("pod", key).Warn("clearing the previous sandbox's state")
		}
	}
	if err := r.node.Apply(ifc, want); err != nil {
		r.warnOnce(pod, ReasonApplyFailed, explain(err))
		r.mu.Lock()
		delete(r.applied, key)
		r.mu.Unlock()
		return err
	}
	if err := r.node.RecordPod(ifc.Index, key); err != nil {
		r.log.WithError(err).WithField("pod", key).Warn("recording the pod's name for the node CLI")
	}
	if err := r.node.PacingError(); err != nil && r.pacingWarned.CompareAndSwap(false, true) {
		// Once per agent: it is the node's condition, not the pod's.
		r.log.WithError(err).Warn("drop-mode rules are enforced by the policer alone on this node (kubeshaper status says so per rule)")
	}
	changed := st == nil || !st.policy.Equal(want)
	ps := &podState{uid: pod.UID, ip: pod.Status.PodIP, ifc: ifc, policy: want, svcPeers: svcPeers}
	r.mu.Lock()
	delete(r.posted, objKey(pod, ReasonApplyFailed))
	r.mu.Unlock()
	// Custom programs are a step of their own: one that cannot load
	// leaves the built-in rules just applied in force.
	r.applyPrograms(pod, ps, want)
	r.mu.Lock()
	r.applied[key] = ps
	r.mu.Unlock()
	if changed && (!want.IsEmpty() || (st != nil && !st.policy.IsEmpty())) {
		msg := "rules removed: counted only"
		if !want.IsEmpty() {
			msg = want.String()
		}
		// Applied only for rules in force: where another tool's program
		// runs first (one kubeshaper yields to), say so instead.
		if why := r.notInForce(ifc, want); why != "" {
			r.warnOnce(pod, ReasonBypassed, fmt.Sprintf("%s on %s is not enforced: %s", msg, ifc.Name, why))
			r.log.WithFields(logrus.Fields{"pod": key, "veth": ifc.Name, "rules": msg}).Warn("applied, not enforced: " + why)
			return nil
		}
		r.events.Event(pod, corev1.EventTypeNormal, ReasonApplied, fmt.Sprintf("%s on %s", msg, ifc.Name))
		r.log.WithFields(logrus.Fields{"pod": key, "veth": ifc.Name, "rules": msg}).Info("applied")
	}
	return nil
}

func (r *Reconciler) remove(key string) error {
	r.gcMu.RLock()
	defer r.gcMu.RUnlock()
	defer r.lockPod(key)()
	r.mu.Lock()
	st := r.applied[key]
	r.mu.Unlock()
	if st == nil {
		return nil
	}
	if err := r.node.Clear(st.ifc); err != nil {
		return fmt.Errorf("removing %s's rules: %w", key, err)
	}
	r.mu.Lock()
	delete(r.applied, key)
	r.mu.Unlock()
	r.log.WithFields(logrus.Fields{"pod": key, "veth": st.ifc.Name}).Debug("removed")
	return nil
}

func (r *Reconciler) reportInvalid(pod *corev1.Pod, svcs []*corev1.Service, want Desired) {
	r.warnIfNew(pod, ReasonInvalidAnnotation, joinErrors(want.PodErrors), " (other valid annotations still apply)")
	for _, s := range svcs {
		r.warnIfNew(s, ReasonInvalidAnnotation, joinErrors(want.ServiceErrors[s.Name]), " (ignored for the pods it selects)")
	}
}

// warnIfNew posts msg+suffix as a Warning unless msg was already the last
// one posted for the object and reason; an empty msg clears the record,
// so the same problem coming back is reported again.
func (r *Reconciler) warnIfNew(obj objectWithMeta, reason, msg, suffix string) {
	if msg == "" {
		r.mu.Lock()
		delete(r.posted, objKey(obj, reason))
		r.mu.Unlock()
		return
	}
	r.warnOnce(obj, reason, msg+suffix)
}

// warnOnce posts a Warning Event unless the same text was the last one
// posted for the object and reason.
func (r *Reconciler) warnOnce(obj objectWithMeta, reason, msg string) {
	k := objKey(obj, reason)
	r.mu.Lock()
	same := r.posted[k] == msg
	r.posted[k] = msg
	r.mu.Unlock()
	if !same {
		r.events.Event(obj, corev1.EventTypeWarning, reason, msg)
		r.log.WithFields(logrus.Fields{"object": obj.GetNamespace() + "/" + obj.GetName(), "reason": reason}).Warn(msg)
	}
}
