package reconcile

import (
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// Holding the position. eBPF CNIs put their programs on the same hooks as
// kubeshaper and, at endpoint regeneration, delete the legacy filters of a
// hook (ours included) or attach in front of us; a resync would notice a
// minute later. The holder reacts within a second:
//   - tc filter and qdisc changes and link changes of the node netns arrive
//     as rtnetlink notifications (milliseconds);
//   - tcx attach/detach sends none: each shaped veth's tcx chain revision
//     is polled every PollTCX (one bpf syscall per hook);
//   - every Verify the placements (pod-side ones too) and the counters are
//     read and judged: a bypassed host side moves the direction pod-side.
// Two tools that both insist on the head would fight forever: after
// MaxRetakes retakes within RetakeWindow kubeshaper backs off (doubling,
// up to MaxBackoff) and reports the pod not enforced, naming the other.

// Holder timings.
const (
	PollTCX      = 250 * time.Millisecond
	Verify       = 2 * time.Second
	MaxRetakes   = 3
	RetakeWindow = 10 * time.Second
	FirstBackoff = 30 * time.Second
	MaxBackoff   = 5 * time.Minute
)

// Event reasons of the holder.
const (
	ReasonBypassed     = "Bypassed"
	ReasonMovedPodSide = "MovedPodSide"
)

// Positioner is what holding the position needs of the node, in the node
// netns; *shaper.Node has it. A Node without it (the unit tests' fake) is
// neither watched nor verified.
type Positioner interface {
	WatchTC(stop <-chan struct{}) (<-chan int, error)
	TCXRevisions(ifc shaper.Interface) [2]uint64
	Hold(ifc shaper.Interface) ([]shaper.Placement, error)
	Placements(ifc shaper.Interface) [2]shaper.Placement
	ReadTraffic(ifc shaper.Interface) shaper.Traffic
}

var _ Positioner = (*shaper.Node)(nil)

// position is the holder's record of one pod.
type position struct {
	ifindex   int
	revs      [2]uint64
	retakes   []time.Time
	until     time.Time // backed off until then
	backoff   time.Duration
	contested string // what keeps taking the head, while backed off
	last      *shaper.Traffic
	enf       [2]shaper.Enforcement
	judged    bool
	// stuck: a direction that could not move pod-side (its mode needs
	// the host veth): not tried again for this veth.
	stuck [2]bool
}

type holder struct {
	mu  sync.Mutex
	pos map[string]*position // by pod key
	// pods serializes the holder's kernel work on a pod with the
	// reconciler's (ensure, remove): a Hold must not put back what a
	// Clear has just taken off. Workers never handle one key at once, so
	// only the holder contends.
	pods sync.Map // pod key → *sync.Mutex
	// Retakes counts every position retaken (for metrics and benches).
	retakes uint64
}

// Enforcement returns the holder's latest judgement of a pod (ok false
// before the first).
func (r *Reconciler) Enforcement(key string) (e [2]shaper.Enforcement, ok bool) {
	r.hold.mu.Lock()
	defer r.hold.mu.Unlock()
	if p := r.hold.pos[key]; p != nil && p.judged {
		return p.enf, true
	}
	return e, false
}

// Retakes is how many times the holder retook a position.
func (r *Reconciler) Retakes() uint64 {
	r.hold.mu.Lock()
	defer r.hold.mu.Unlock()
	return r.hold.retakes
}

// lockPod locks the pod's kernel work and returns the unlock.
func (r *Reconciler) lockPod(key string) func() {
	m, _ := r.hold.pods.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// stillApplied reports whether the pod is still applied on this veth.
func (r *Reconciler) stillApplied(key string, ifc shaper.Interface) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.applied[key]
	return st != nil && st.ifc.Index == ifc.Index
}

// holdPositions runs the holder until stop closes.
func (r *Reconciler) holdPositions(stop <-chan struct{}) {
	pn, ok := r.node.(Positioner)
	if !ok {
		return
	}
	events, err := pn.WatchTC(stop)
	if err != nil {
		r.log.WithError(err).Warn("no tc notifications: positions are checked by polling only")
	}
	poll := time.NewTicker(PollTCX)
	defer poll.Stop()
	verify := time.NewTicker(Verify)
	defer verify.Stop()
	for {
		select {
		case <-stop:
			return
		case idx, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			for key, ifc := range r.shapedInterfaces() {
				if idx == 0 || idx == ifc.Index || idx == ifc.Pod.IfIndex {
					r.check(pn, key, ifc, false)
				}
			}
		case <-poll.C:
			for key, ifc := range r.shapedInterfaces() {
				revs := pn.TCXRevisions(ifc)
				r.hold.mu.Lock()
				p := r.positionOf(key, ifc)
				moved := revs != p.revs
				r.hold.mu.Unlock()
				if moved {
					r.check(pn, key, ifc, false)
				}
			}
		case <-verify.C:
			for key, ifc := range r.shapedInterfaces() {
				r.check(pn, key, ifc, true)
			}
			r.forgetPositions()
		}
	}
}

// shapedInterfaces lists the pods the agent applies state to.
func (r *Reconciler) shapedInterfaces() map[string]shaper.Interface {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]shaper.Interface, len(r.applied))
	for k, st := range r.applied {
		out[k] = st.ifc
	}
	return out
}

// positionOf returns the record of a pod (a new one for a new veth).
// Called with hold.mu held.
func (r *Reconciler) positionOf(key string, ifc shaper.Interface) *position {
	p := r.hold.pos[key]
	if p == nil || p.ifindex != ifc.Index {
		p = &position{ifindex: ifc.Index}
		r.hold.pos[key] = p
	}
	return p
}

func (r *Reconciler) forgetPositions() {
	live := r.shapedInterfaces()
	r.hold.mu.Lock()
	defer r.hold.mu.Unlock()
	for k := range r.hold.pos {
		if _, ok := live[k]; !ok {
			delete(r.hold.pos, k)
		}
	}
	r.hold.pods.Range(func(k, _ any) bool {
		if _, ok := live[k.(string)]; !ok {
			r.hold.pods.Delete(k)
		}
		return true
	})
}

// check retakes a pod's position if another tool took it (unless backed
// off) and, with judge, judges enforcement from the counters since the
// last judgement.
func (r *Reconciler) check(pn Positioner, key string, ifc shaper.Interface, judge bool) {
	now := time.Now()
	r.hold.mu.Lock()
	p := r.positionOf(key, ifc)
	backedOff := now.Before(p.until)
	r.hold.mu.Unlock()
	log := r.log.WithFields(logrus.Fields{"pod": key, "veth": ifc.Name})

	if !backedOff {
		unlock := r.lockPod(key)
		if !r.stillApplied(key, ifc) {
			unlock()
			return // removed meanwhile: nothing to hold
		}
		retaken, err := pn.Hold(ifc)
		unlock()
		if err != nil {
			log.WithError(err).Warn("holding kubeshaper's position")
		}
		if len(retaken) > 0 {
			r.retaken(key, ifc, retaken, now, log)
		}
	}
	revs := pn.TCXRevisions(ifc)
	r.hold.mu.Lock()
	p.revs = revs
	r.hold.mu.Unlock()
	if !judge {
		return
	}
	pl := pn.Placements(ifc)
	t := pn.ReadTraffic(ifc)
	r.hold.mu.Lock()
	enf := shaper.Judge(pl, p.last, &t)
	p.last = &t
	if now.Before(p.until) && p.contested != "" {
		for d := range enf {
			if pl[d].PodSide {
				continue
			}
			enf[d].Enforced = false
			enf[d].Reason = fmt.Sprintf("contested: %s keeps taking the head of the hook; kubeshaper backed off until %s", p.contested, p.until.Format(time.TimeOnly))
			enf[d].Foreign = p.contested
		}
	}
	prev, had := p.enf, p.judged
	p.enf, p.judged = enf, true
	r.hold.mu.Unlock()
	r.report(key, ifc, prev, had, enf, log)
}

// retaken records retakes and backs off when another tool insists.
func (r *Reconciler) retaken(key string, ifc shaper.Interface, retaken []shaper.Placement, now time.Time, log *logrus.Entry) {
	what := ""
	for _, pl := range retaken {
		if what != "" {
			what += "; "
		}
		what += fmt.Sprintf("%s hook %s (ahead: %s)", pl.Direction, pl.String(), pl.AheadString())
	}
	r.hold.mu.Lock()
	r.hold.retakes++
	p := r.positionOf(key, ifc)
	recent := p.retakes[:0]
	for _, t := range p.retakes {
		if now.Sub(t) < RetakeWindow {
			recent = append(recent, t)
		}
	}
	p.retakes = append(recent, now)
	backoff := time.Duration(0)
	if len(p.retakes) >= MaxRetakes {
		p.backoff = min(max(2*p.backoff, FirstBackoff), MaxBackoff)
		p.until = now.Add(p.backoff)
		p.retakes = nil
		for _, pl := range retaken {
			if pl.Foreign() {
				p.contested = pl.AheadString()
			}
		}
		if p.contested == "" {
			p.contested = "another tool"
		}
		backoff = p.backoff
	}
	contested := p.contested
	r.hold.mu.Unlock()
	log.WithField("retaken", what).Info("another tool took kubeshaper's position: retaken")
	pod := r.podObject(key)
	if pod == nil {
		return
	}
	if backoff > 0 {
		r.warnOnce(pod, ReasonBypassed, fmt.Sprintf("%s keeps taking the head of %s's hooks: kubeshaper retook its position %d times in %s and backs off for %s; the pod's rules are not enforced meanwhile", contested, ifc.Name, MaxRetakes, RetakeWindow, backoff))
	}
}

// report posts what changed in a pod's enforcement: a Warning Bypassed
// naming the other program when a direction stops being enforced, and
// moves a bypassed host-side direction to the pod's own interface.
func (r *Reconciler) report(key string, ifc shaper.Interface, prev [2]shaper.Enforcement, had bool, enf [2]shaper.Enforcement, log *logrus.Entry) {
	pod := r.podObject(key)
	var msgs []string
	for _, d := range rules.Directions {
		e := enf[d]
		if !e.Enforced {
			msgs = append(msgs, fmt.Sprintf("%s: %s", d, e.Reason))
		}
	}
	if pod != nil {
		if len(msgs) == 0 {
			r.warnIfNew(pod, ReasonBypassed, "", "")
		} else {
			msg := ""
			for i, m := range msgs {
				if i > 0 {
					msg += "; "
				}
				msg += m
			}
			r.warnOnce(pod, ReasonBypassed, "kubeshaper's rules are not enforced: "+msg)
		}
	}
	for _, d := range rules.Directions {
		if enf[d].Bypassed && !enf[d].PodSide && ifc.Pod.NetnsPath != "" {
			r.hold.mu.Lock()
			stuck := r.positionOf(key, ifc).stuck[d]
			r.hold.mu.Unlock()
			if !stuck {
				r.movePodSide(key, d, log)
			}
		}
	}
}

// movePodSide re-applies a pod with a direction handled on its own
// interface, where no host-side redirect or program can skip the rule.
func (r *Reconciler) movePodSide(key string, d rules.Direction, log *logrus.Entry) {
	r.gcMu.RLock()
	defer r.gcMu.RUnlock()
	defer r.lockPod(key)()
	r.mu.Lock()
	st := r.applied[key]
	if st == nil || st.ifc.PodSide[d] {
		r.mu.Unlock()
		return
	}
	ifc := st.ifc
	ifc.PodSide[d] = true
	pol := st.policy
	r.mu.Unlock()
	if err := r.node.Apply(ifc, pol); err != nil {
		log.WithError(err).WithField("direction", d).Warn("moving the bypassed direction to the pod's interface")
		if pod := r.podObject(key); pod != nil {
			r.warnOnce(pod, ReasonBypassed, fmt.Sprintf("%s is bypassed on the host veth and cannot run at the pod's interface: %v", d, err))
		}
		// Back to where it was, and not tried again for this veth.
		if err := r.node.Apply(st.ifc, pol); err != nil {
			log.WithError(err).Warn("re-applying after a failed pod-side move")
		}
		r.hold.mu.Lock()
		r.positionOf(key, st.ifc).stuck[d] = true
		r.hold.mu.Unlock()
		return
	}
	r.mu.Lock()
	if cur := r.applied[key]; cur == st {
		cur.ifc = ifc
	}
	r.mu.Unlock()
	r.hold.mu.Lock()
	if p := r.hold.pos[key]; p != nil {
		p.last = nil // judge afresh from the new hook
	}
	r.hold.mu.Unlock()
	log.WithField("direction", d).Info("host side bypassed: moved to the pod's interface")
	pod := r.podObject(key)
	if pod != nil {
		r.events.Event(pod, corev1.EventTypeNormal, ReasonMovedPodSide, fmt.Sprintf("%s: deliveries bypass %s's hook on the host veth; the rule now runs on the pod's %s", d, ifc.Name, ifc.Pod.IfName))
	}
	// A custom program goes with its direction: the deliveries that skip
	// the host veth's hook skip the program there too.
	if pod != nil && st.progs != [2]string{} {
		r.applyPrograms(pod, st, pol)
	}
}

func (r *Reconciler) podObject(key string) *corev1.Pod {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := r.w.Pods.Pods(ns).Get(name)
	if err != nil {
		return nil
	}
	return pod
}

// notInForce says why a just-applied policy is not in force on ifc ("" if
// it is, or the node cannot tell): a direction with a rule whose hook does
// not run our program first.
func (r *Reconciler) notInForce(ifc shaper.Interface, pol rules.Policy) string {
	pn, ok := r.node.(Positioner)
	if !ok {
		return ""
	}
	enf := shaper.Judge(pn.Placements(ifc), nil, nil)
	why := ""
	for _, d := range rules.Directions {
		if pol[d].IsEmpty() || enf[d].Enforced {
			continue
		}
		if why != "" {
			why += "; "
		}
		why += fmt.Sprintf("%s: %s", d, enf[d].Reason)
	}
	return why
}
