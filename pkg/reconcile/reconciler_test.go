package reconcile

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// fakeNode is the node's kernel as the reconciler sees it, in memory: pod
// IPs resolve to interfaces the test lays out, Apply records the policy,
// and the test can break things (a filter deleted, a veth gone, a failing
// apply) to see what the reconciler decides.
type fakeNode struct {
	mu       sync.Mutex
	ifaces   map[string]shaper.Interface // pod IP → interface
	resolveE map[string]error            // pod IP → Resolve error
	applyErr error
	gone     map[int]bool         // host veths deleted under us
	broken   map[int]bool         // Intact says no
	applied  map[int]rules.Policy // what the kernel holds
	names    map[int]string       // RecordPod
	applies  []int                // every Apply, by ifindex
	clears   []int                // every Clear, by ifindex
	clocks   map[string]time.Time // rule set clocks
	leftover map[int]bool         // state no pod may claim
	forgot   []string             // ForgetRuleSets' live UIDs
	peers    func(rules.ServiceRef) []netip.Prefix
}

func newFakeNode() *fakeNode {
	return &fakeNode{ifaces: map[string]shaper.Interface{}, resolveE: map[string]error{},
		gone: map[int]bool{}, broken: map[int]bool{}, applied: map[int]rules.Policy{},
		names: map[int]string{}, clocks: map[string]time.Time{}, leftover: map[int]bool{}}
}

func (f *fakeNode) Resolve(ip net.IP) (shaper.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.resolveE[ip.String()]; err != nil {
		return shaper.Interface{}, err
	}
	ifc, ok := f.ifaces[ip.String()]
	if !ok {
		return ifc, fmt.Errorf("no netns holds %s: %w", ip, shaper.ErrNetnsNotFound)
	}
	return ifc, nil
}

func (f *fakeNode) Exists(ifc shaper.Interface) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.gone[ifc.Index]
}

func (f *fakeNode) Intact(ifc shaper.Interface) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.applied[ifc.Index]
	return ok && !f.broken[ifc.Index] && !f.gone[ifc.Index]
}

func (f *fakeNode) Apply(ifc shaper.Interface, pol rules.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, ifc.Index)
	if f.applyErr != nil {
		delete(f.applied, ifc.Index) // all or nothing: cleared
		return f.applyErr
	}
	f.applied[ifc.Index] = pol.Clone()
	delete(f.broken, ifc.Index)
	return nil
}

func (f *fakeNode) RecordPod(ifindex int, pod string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names[ifindex] = pod
	return nil
}

func (f *fakeNode) Clear(ifc shaper.Interface) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clears = append(f.clears, ifc.Index)
	delete(f.applied, ifc.Index)
	delete(f.names, ifc.Index)
	return nil
}

func (f *fakeNode) ProgramName(p rules.Program, d rules.Direction) (string, error) {
	return "", errors.New("no program directory")
}

func (f *fakeNode) ApplyPrograms(ifc shaper.Interface, pol rules.Policy) (st [2]shaper.ProgramStatus) {
	for _, d := range rules.Directions {
		if pol[d].Program != nil {
			st[d].Err = errors.New("no program directory")
		}
	}
	return st
}

func (f *fakeNode) ProgramsIntact(shaper.Interface, [2]string) bool { return true }
func (f *fakeNode) HasPrograms(shaper.Interface) bool               { return false }

func (f *fakeNode) CollectLeftovers(claimed func(int) bool) ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var removed []int
	for idx := range f.applied {
		if !claimed(idx) {
			removed = append(removed, idx)
		}
	}
	for idx := range f.leftover {
		if !claimed(idx) {
			removed = append(removed, idx)
		}
	}
	for _, idx := range removed {
		delete(f.applied, idx)
		delete(f.leftover, idx)
	}
	slices.Sort(removed)
	return slices.Compact(removed), nil
}

func (f *fakeNode) RuleSetClock(uid, set string, now time.Time) (time.Time, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := uid + "\n" + set
	if _, ok := f.clocks[k]; !ok {
		f.clocks[k] = now
	}
	return f.clocks[k], false, nil
}

func (f *fakeNode) AnnounceRuleSet(string, string) error { return nil }

func (f *fakeNode) ForgetRuleSets(live []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = slices.Clone(live)
	return nil
}

func (f *fakeNode) UseServicePeers(p func(rules.ServiceRef) []netip.Prefix) { f.peers = p }
func (f *fakeNode) RemovePins() error                                       { return nil }
func (f *fakeNode) PacingError() error                                      { return nil }

func (f *fakeNode) count(list *[]int, ifindex int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, i := range *list {
		if i == ifindex {
			n++
		}
	}
	return n
}

func (f *fakeNode) holds(ifindex int) (rules.Policy, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.applied[ifindex]
	return p, ok
}

// harness is a reconciler over a fakeNode and an in-memory pod and
// Service cache (no informers run: the test writes the cache).
type harness struct {
	t      *testing.T
	r      *Reconciler
	node   *fakeNode
	pods   cache.Indexer
	svcs   cache.Indexer
	events *record.FakeRecorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	// The informers never run (the test fills the caches), so the client
	// never dials: its address is a port nothing listens on.
	client, err := kube.NewClient(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kube.NewWatcher(client, "node1", 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, node: newFakeNode(), events: record.NewFakeRecorder(100),
		pods: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
		svcs: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}),
	}
	w.Pods, w.Services = listersv1.NewPodLister(h.pods), listersv1.NewServiceLister(h.svcs)
	t.Cleanup(w.Queue.ShutDown)
	log := logrus.New()
	log.SetOutput(io.Discard)
	h.r = New(w, h.node, h.events, logrus.NewEntry(log), Options{RetryNotReady: time.Hour})
	return h
}

// pod puts a pod with ip and annotations in the cache; its interface (if
// ifindex > 0) is what the fake node resolves ip to.
func (h *harness) pod(name, ip string, ifindex int, ann map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), Annotations: ann, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: "node1"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if err := h.pods.Add(p); err != nil {
		h.t.Fatal(err)
	}
	if ifindex > 0 {
		h.node.mu.Lock()
		h.node.ifaces[ip] = shaper.Interface{Name: fmt.Sprintf("veth%d", ifindex), Index: ifindex}
		h.node.mu.Unlock()
	}
	return p
}

func (h *harness) sync(name string) error {
	h.t.Helper()
	return h.r.Sync("ns/" + name)
}

func (h *harness) mustSync(name string) {
	h.t.Helper()
	if err := h.sync(name); err != nil {
		h.t.Fatalf("sync %s: %v", name, err)
	}
}

// drain returns the Events posted so far ("Type Reason message").
func (h *harness) drain() []string {
	var out []string
	for {
		select {
		case e := <-h.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func countPrefix(events []string, prefix string) int {
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

const bw = "kubeshaper.io/bandwidth"

func TestSyncAppliesOnceAndIsIdempotent(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, map[string]string{bw: "10mbps egress"})
	h.mustSync("a")
	pol, ok := h.node.holds(7)
	if !ok || pol[rules.Egress].Bandwidth == nil || pol[rules.Egress].Bandwidth.RateBitsPerSec != 10_000_000 {
		t.Fatalf("kernel holds %v (ok=%v), want a 10 Mbit/s egress limit", pol, ok)
	}
	if h.node.names[7] != "ns/a" {
		t.Errorf("pod name recorded %q, want ns/a", h.node.names[7])
	}
	if ev := h.drain(); countPrefix(ev, "Normal Applied") != 1 {
		t.Errorf("events %q: want one Applied", ev)
	}
	// Nothing changed: no kernel work, no Event.
	h.mustSync("a")
	h.mustSync("a")
	if n := h.node.count(&h.node.applies, 7); n != 1 {
		t.Errorf("applied %d times for an unchanged pod, want 1", n)
	}
	if ev := h.drain(); len(ev) != 0 {
		t.Errorf("unchanged pod posted %q", ev)
	}
}

func TestSyncRepairsWhatWasRemovedBehindItsBack(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, map[string]string{bw: "10mbps egress"})
	h.mustSync("a")
	h.node.mu.Lock()
	h.node.broken[7] = true // someone ran `tc filter del`
	h.node.mu.Unlock()
	h.mustSync("a")
	if n := h.node.count(&h.node.applies, 7); n != 2 {
		t.Fatalf("applies after a repair: %d, want 2", n)
	}
	// A repair is no rule change: no second Applied.
	if ev := h.drain(); countPrefix(ev, "Normal Applied") != 1 {
		t.Errorf("events %q: want exactly one Applied", ev)
	}
}

func TestSyncRetriesAPodWhoseNetnsIsNotUpWithoutFailing(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 0, map[string]string{bw: "10mbps egress"}) // no netns yet
	if err := h.sync("a"); err != nil {
		t.Fatalf("a sandbox not up yet is not a failure: %v", err)
	}
	if len(h.node.applies) != 0 || len(h.drain()) != 0 {
		t.Fatal("nothing may be applied or posted before the netns exists")
	}
	h.node.mu.Lock()
	h.node.ifaces["10.0.0.2"] = shaper.Interface{Name: "veth9", Index: 9}
	h.node.mu.Unlock()
	h.mustSync("a")
	if _, ok := h.node.holds(9); !ok {
		t.Fatal("once the netns is up the rule must be applied")
	}
}

func TestNotShapeablePostedOnceAndAmbiguousIsRetried(t *testing.T) {
	h := newHarness(t)
	h.pod("nv", "10.0.0.3", 0, map[string]string{bw: "10mbps egress"})
	h.pod("amb", "10.0.0.4", 0, map[string]string{bw: "10mbps egress"})
	h.node.resolveE["10.0.0.3"] = fmt.Errorf("eth0 is a macvlan: %w", shaper.ErrNotVeth)
	h.node.resolveE["10.0.0.4"] = fmt.Errorf("veth3 and veth4: %w", shaper.ErrAmbiguousIP)
	for range 3 {
		if err := h.sync("nv"); err != nil {
			t.Fatalf("not a veth is final, not an error to retry: %v", err)
		}
		if err := h.sync("amb"); err == nil {
			t.Fatal("an ambiguous IP must be retried (an error for the queue's backoff)")
		}
	}
	ev := h.drain()
	if countPrefix(ev, "Warning NotShapeable") != 2 {
		t.Fatalf("events %q: want one NotShapeable per pod, not one per sync", ev)
	}
	if len(h.node.applies) != 0 {
		t.Fatal("nothing may be applied on a guess")
	}
}

func TestApplyFailureIsReportedAndRetriedNotRemembered(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, map[string]string{bw: "10mbps egress"})
	h.node.applyErr = errors.New("attach: operation not permitted")
	if err := h.sync("a"); err == nil {
		t.Fatal("a failed apply must be returned for the queue to retry")
	}
	if err := h.sync("a"); err == nil {
		t.Fatal("still failing")
	}
	ev := h.drain()
	if countPrefix(ev, "Warning ApplyFailed") != 1 || !strings.Contains(ev[0], "operation not permitted") {
		t.Fatalf("events %q: want one ApplyFailed with the cause", ev)
	}
	h.node.applyErr = nil
	h.mustSync("a")
	if _, ok := h.node.holds(7); !ok {
		t.Fatal("applied once the cause is gone")
	}
	if ev := h.drain(); countPrefix(ev, "Normal Applied") != 1 {
		t.Fatalf("events %q: want Applied after recovery", ev)
	}
}

func TestInvalidAnnotationWarnsAndTheValidKeyStillApplies(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, map[string]string{bw: "fast egress", "kubeshaper.io/loss": "uniform egress 1%"})
	h.mustSync("a")
	h.mustSync("a")
	ev := h.drain()
	if countPrefix(ev, "Warning InvalidAnnotation") != 1 {
		t.Fatalf("events %q: want one InvalidAnnotation", ev)
	}
	pol, ok := h.node.holds(7)
	if !ok || pol[rules.Egress].Loss == nil || pol[rules.Egress].Bandwidth != nil {
		t.Fatalf("kernel holds %v: want the loss rule only", pol)
	}
}

func TestServiceRulesReachPodsAndThePodsOwnWins(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, nil)
	h.pod("b", "10.0.0.3", 8, map[string]string{bw: "5mbps egress"})
	for _, app := range []string{"a", "b"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc-" + app, UID: types.UID("s" + app),
			Annotations: map[string]string{bw: "20mbps egress"}}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}}}
		if err := h.svcs.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	h.mustSync("a")
	h.mustSync("b")
	if pol, _ := h.node.holds(7); pol[rules.Egress].Bandwidth == nil || pol[rules.Egress].Bandwidth.RateBitsPerSec != 20_000_000 {
		t.Errorf("pod a holds %v, want its Service's 20 Mbit/s", pol)
	}
	if pol, _ := h.node.holds(8); pol[rules.Egress].Bandwidth == nil || pol[rules.Egress].Bandwidth.RateBitsPerSec != 5_000_000 {
		t.Errorf("pod b holds %v, want its own 5 Mbit/s over the Service's", pol)
	}
}

func TestDeletedPodAndNewSandboxClearTheOldInterface(t *testing.T) {
	h := newHarness(t)
	p := h.pod("a", "10.0.0.2", 7, map[string]string{bw: "10mbps egress"})
	h.mustSync("a")
	// The pod's sandbox is replaced: same pod, a new veth (and UID kept).
	h.node.mu.Lock()
	h.node.gone[7] = true
	h.node.ifaces["10.0.0.2"] = shaper.Interface{Name: "veth11", Index: 11}
	h.node.mu.Unlock()
	h.mustSync("a")
	if h.node.count(&h.node.clears, 7) != 1 {
		t.Error("the old sandbox's interface must be cleared")
	}
	if _, ok := h.node.holds(11); !ok {
		t.Fatal("the new sandbox must carry the rule")
	}
	if err := h.pods.Delete(p); err != nil {
		t.Fatal(err)
	}
	h.mustSync("a")
	if _, ok := h.node.holds(11); ok || h.node.count(&h.node.clears, 11) != 1 {
		t.Fatal("a deleted pod's interface must be cleared")
	}
	if h.r.Stats().Pods != 0 {
		t.Fatalf("%d pods remembered after deletion", h.r.Stats().Pods)
	}
}

func TestHostNetworkAndFinishedPodsAreNotShaped(t *testing.T) {
	h := newHarness(t)
	p := h.pod("hn", "10.0.0.9", 12, map[string]string{bw: "10mbps egress"})
	p.Spec.HostNetwork = true
	h.mustSync("hn")
	if ev := h.drain(); countPrefix(ev, "Warning NotShapeable") != 1 {
		t.Errorf("events %q: want NotShapeable for hostNetwork", ev)
	}
	done := h.pod("done", "10.0.0.10", 13, map[string]string{bw: "10mbps egress"})
	h.mustSync("done")
	done.Status.Phase = corev1.PodSucceeded
	h.mustSync("done")
	if _, ok := h.node.holds(13); ok {
		t.Error("a finished pod's rules must be removed")
	}
	if _, ok := h.node.holds(12); ok {
		t.Error("a hostNetwork pod must not be shaped")
	}
}

func TestCollectGarbageKeepsClaimedAndRemovesTheRest(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, nil) // counted only: still claimed
	h.mustSync("a")
	h.node.mu.Lock()
	h.node.leftover[40] = true // a crashed agent's, or a pod deleted while down
	h.node.applied[41] = rules.Policy{}
	h.node.mu.Unlock()
	if err := h.r.CollectGarbage(); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.node.holds(7); !ok {
		t.Fatal("a live pod's state was collected")
	}
	if _, ok := h.node.holds(41); ok || h.node.leftover[40] {
		t.Fatal("unclaimed state must be collected")
	}
	if !slices.Equal(h.node.forgot, []string{"uid-a"}) {
		t.Fatalf("time-limit clocks kept for %v, want the live pod only", h.node.forgot)
	}
}

func TestTimeLimitEndsTheRule(t *testing.T) {
	h := newHarness(t)
	h.pod("a", "10.0.0.2", 7, map[string]string{bw: "10mbps egress", "kubeshaper.io/duration": "1s"})
	h.mustSync("a")
	if pol, _ := h.node.holds(7); pol[rules.Egress].Bandwidth == nil {
		t.Fatal("the rule applies until its time is up")
	}
	// Move the recorded first application back instead of waiting.
	h.node.mu.Lock()
	for k, v := range h.node.clocks {
		h.node.clocks[k] = v.Add(-2 * time.Second)
	}
	h.node.mu.Unlock()
	h.mustSync("a")
	if pol, _ := h.node.holds(7); pol[rules.Egress].Bandwidth != nil {
		t.Fatalf("kernel holds %v after the time limit", pol)
	}
	if ev := h.drain(); countPrefix(ev, "Normal Expired") != 1 {
		t.Errorf("events %q: want one Expired", ev)
	}
}
