package shaper

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Errors of Resolve the reconciler tells apart (podnet's, under their
// meaning for a pod): not up yet, not a veth, or two candidates.
var (
	ErrNetnsNotFound = podnet.ErrNetnsNotFound
	ErrNotVeth       = podnet.ErrNotVeth
	ErrAmbiguousIP   = podnet.ErrAmbiguousIP
)

// Node is the node's kernel state as the agent's reconciler sees it: it
// finds a pod's interfaces (pkg/podnet) and reads and writes everything
// kubeshaper keeps for them — filters, qdiscs, map entries, pod names,
// custom programs, first-applied clocks — in the network namespace that
// holds the pods' host-side veths. It is the only way the reconciler
// reaches the kernel, so that what the reconciler decides can be tested
// with a fake.
type Node struct {
	sh     *Shaper
	dp     *datapath.Datapath
	finder *podnet.Finder
	netns  string
}

// NewNode returns the Node for dp's datapath. netns is the namespace of
// the host veths ("": the caller's, the node's with hostNetwork; tests use
// a "node" netns); programDir the admin's custom programs ("": refused).
func NewNode(dp *datapath.Datapath, netns, programDir string) *Node {
	sh := New(dp)
	sh.ProgramDir = programDir
	return &Node{sh: sh, dp: dp, finder: podnet.NewFinder(), netns: netns}
}

// in runs fn in the node netns.
func (n *Node) in(fn func() error) error {
	if n.netns == "" {
		return fn()
	}
	return podnet.Do(n.netns, fn)
}

// UseServicePeers sets how Services that rules target (to=svc:ns/name)
// resolve to addresses.
func (n *Node) UseServicePeers(f func(rules.ServiceRef) []netip.Prefix) { n.sh.Services = f }

// Resolve finds the pod holding ip: its netns, then its host-side veth.
func (n *Node) Resolve(ip net.IP) (Interface, error) {
	var ifc Interface
	err := n.in(func() error {
		nsPath, hv, err := n.finder.Resolve(ip)
		if err != nil {
			return err
		}
		ifc = Interface{Name: hv.Name, Index: hv.Index,
			Pod: podnet.PodVeth{NetnsPath: nsPath, IfIndex: hv.PodIfIndex, IfName: hv.PodIfName}}
		return nil
	})
	return ifc, err
}

// Exists reports whether ifc's host veth still exists under its index.
func (n *Node) Exists(ifc Interface) bool {
	ok := false
	n.in(func() error {
		l, err := net.InterfaceByIndex(ifc.Index)
		ok = err == nil && l.Name == ifc.Name
		return nil
	})
	return ok
}

// Intact reports whether the kernel still holds what Apply put on ifc:
// both directions' entries in the maps and our programs on the hooks
// (someone may have run `tc filter del`). Whether they run first is the
// position holder's concern (Hold).
func (n *Node) Intact(ifc Interface) bool {
	for _, d := range rules.Directions {
		if _, ok, err := n.dp.Lookup(datapath.KeyOf(ifc.Index, d)); err != nil || !ok {
			return false
		}
	}
	ok := false
	n.in(func() error { ok = n.sh.Attached(ifc); return nil })
	return ok
}

// Apply makes ifc carry pol, all or nothing (see Shaper.Apply).
func (n *Node) Apply(ifc Interface, pol rules.Policy) error {
	return n.in(func() error { return n.sh.Apply(ifc, pol) })
}

// RecordPod records pod (namespace/name) as the owner of the host veth
// ifindex, for the node CLI's status.
func (n *Node) RecordPod(ifindex int, pod string) error { return n.dp.SetPodName(ifindex, pod) }

// Clear removes what kubeshaper put on ifc. When the veth is gone (the
// sandbox was torn down, its filters with it) only the map entries are
// left; when the pod's netns is gone only the host side is touched.
func (n *Node) Clear(ifc Interface) error {
	if !n.Exists(ifc) {
		return n.sh.ForgetIndex(ifc.Index)
	}
	if ifc.Pod.NetnsPath != "" && !podnet.Exists(ifc.Pod.NetnsPath) {
		ifc.Pod = podnet.PodVeth{}
	}
	return n.in(func() error { return n.sh.Clear(ifc) })
}

// ProgramName is the filter name a custom program has as its file and
// parameters are now (it changes when either does).
func (n *Node) ProgramName(p rules.Program, d rules.Direction) (string, error) {
	return datapath.CustomFilterName(n.sh.ProgramDir, p, d)
}

// ApplyPrograms runs Shaper.ApplyPrograms in the node netns.
func (n *Node) ApplyPrograms(ifc Interface, pol rules.Policy) (st [2]ProgramStatus) {
	n.in(func() error { st = n.sh.ApplyPrograms(ifc, pol); return nil })
	return st
}

// ProgramsIntact runs Shaper.ProgramsIntact in the node netns.
func (n *Node) ProgramsIntact(ifc Interface, want [2]string) (ok bool) {
	n.in(func() error { ok = n.sh.ProgramsIntact(ifc, want); return nil })
	return ok
}

// HasPrograms reports whether the interface carries a custom program
// filter (true when unsure, so that the caller's cleanup step looks).
func (n *Node) HasPrograms(ifc Interface) bool {
	found := true
	n.in(func() error { found = n.sh.HasPrograms(ifc); return nil })
	return found
}

// CollectLeftovers removes the state of every interface kubeshaper has
// map entries or filters for and claimed does not claim: leftovers of a
// crash, of a pod deleted while the agent was down, of a veth deleted
// under us. It returns the interfaces it cleared.
func (n *Node) CollectLeftovers(claimed func(ifindex int) bool) (removed []int, err error) {
	// The pinned maps of network namespaces that no longer exist (a CLI
	// run in a netns deleted without a clear), as at the agent's start.
	n.dp.PruneStalePinDirs()
	keys, err := n.dp.Keys()
	if err != nil {
		return nil, err
	}
	unclaimed := map[int]bool{}
	for _, k := range keys {
		if !claimed(int(k.Ifindex)) {
			unclaimed[int(k.Ifindex)] = true
		}
	}
	var ours map[int][]attach.Filter
	if err := n.in(func() (err error) { ours, err = attach.ListAllOurs(); return err }); err != nil {
		return nil, fmt.Errorf("listing kubeshaper filters: %w", err)
	}
	for idx := range ours {
		if !claimed(idx) {
			unclaimed[idx] = true
		}
	}
	for _, idx := range n.sh.tcxPinned() {
		if !claimed(idx) {
			unclaimed[idx] = true
		}
	}
	var errs []error
	for idx := range unclaimed {
		err := n.in(func() error {
			l, err := net.InterfaceByIndex(idx)
			if err != nil {
				return n.sh.ForgetIndex(idx)
			}
			ifc := Interface{Name: l.Name, Index: idx}
			if pod, err := podnet.PodEnd(l.Name); err == nil {
				ifc.Pod = pod
			}
			return n.sh.Clear(ifc)
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, idx)
	}
	return removed, errors.Join(errs...)
}

// RuleSetClock says when a pod's time-limited rule set was first applied
// (recording now if never) and whether its end was announced. The record
// is pinned: a restarted agent keeps the clock.
func (n *Node) RuleSetClock(podUID, ruleSet string, now time.Time) (first time.Time, announced bool, err error) {
	rec, err := n.dp.RuleSet(datapath.NewRuleSetKey(podUID, ruleSet), now)
	return rec.FirstApplied(), rec.Announced != 0, err
}

// AnnounceRuleSet records that the end of a pod's rule set was reported.
func (n *Node) AnnounceRuleSet(podUID, ruleSet string) error {
	return n.dp.AnnounceRuleSet(datapath.NewRuleSetKey(podUID, ruleSet))
}

// ForgetRuleSets drops the time-limit clocks of pods not in live (UIDs).
func (n *Node) ForgetRuleSets(live []string) error {
	keep := make(map[[16]byte]bool, len(live))
	for _, uid := range live {
		keep[datapath.PodKey(uid)] = true
	}
	return n.dp.ForgetRuleSets(func(k [16]byte) bool { return keep[k] })
}

// RemovePins removes the pinned maps themselves (the last step of a
// cleanup, once no interface uses them).
func (n *Node) RemovePins() error {
	n.sh.ClosePacing()
	return datapath.RemovePins(n.dp.PinDir()) // the socket-pacing link with them
}

// PacingError is why drop-mode rules are not socket-paced on this node
// (nil when they are, or none was asked for).
func (n *Node) PacingError() error { return n.sh.PacingError() }

// Holding the position and telling the truth (see place.go, verify.go),
// in the node netns.

// SetYieldTo names the tcx programs kubeshaper lets run first (the agent's
// --tcx-yield-to).
func (n *Node) SetYieldTo(names []string) {
	n.sh.YieldTo = map[string]bool{}
	for _, s := range names {
		n.sh.YieldTo[s] = true
	}
}

// WatchTC subscribes to tc and link notifications of the node netns and
// sends the ifindexes they concern (0: recheck everything) until stop
// closes.
func (n *Node) WatchTC(stop <-chan struct{}) (<-chan int, error) {
	var w *attach.TCWatch
	if err := n.in(func() (err error) { w, err = attach.WatchTC(); return err }); err != nil {
		return nil, err
	}
	out := make(chan int, 256)
	go func() {
		<-stop
		w.Close()
	}()
	go func() {
		defer close(out)
		for {
			idx, err := w.Next()
			if err != nil {
				return
			}
			for _, i := range idx {
				select {
				case out <- i:
				default: // full: the poll catches up
				}
			}
		}
	}()
	return out, nil
}

// TCXRevisions reads the tcx chain revisions of ifc's host veth hooks.
func (n *Node) TCXRevisions(ifc Interface) (r [2]uint64) {
	n.in(func() error { r = n.sh.TCXRevisions(ifc); return nil })
	return r
}

// Hold puts our programs back in front on ifc (Shaper.Hold).
func (n *Node) Hold(ifc Interface) (retaken []Placement, err error) {
	err = n.in(func() (err error) { retaken, err = n.sh.Hold(ifc); return err })
	if err != nil && !n.Exists(ifc) {
		// The veth went with its pod (or its sandbox) between the
		// watcher's event and now: nothing to hold, and the pod's own
		// update clears what is left. Not worth a warning per event.
		return nil, nil
	}
	return retaken, err
}

// Placements reads where ifc's directions run (Shaper.Placements).
func (n *Node) Placements(ifc Interface) (p [2]Placement) {
	n.in(func() error { p = n.sh.Placements(ifc); return nil })
	return p
}

// ReadTraffic reads ifc's counters and its pod interface's.
func (n *Node) ReadTraffic(ifc Interface) (t Traffic) {
	n.in(func() error { t = n.sh.ReadTraffic(ifc); return nil })
	return t
}

// OtherBandwidthEnforcer names another enforcer of the standard
// kubernetes.io/{in,e}gress-bandwidth annotations acting on ifc, or "".
func (n *Node) OtherBandwidthEnforcer(ifc Interface) (who string) {
	n.in(func() error { who = otherBandwidthEnforcer(ifc); return nil })
	return who
}
