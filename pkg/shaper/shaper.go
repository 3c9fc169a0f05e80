// Package shaper makes one pod interface carry exactly one rules.Policy:
// BPF filters on both hooks of the host-side veth, one datapath config per
// direction, and the kernel qdiscs some modes rely on (tbf, fq). It is the
// one place that sequences pkg/datapath and pkg/attach, shared by the node
// CLI and the agent's reconciler. Apply is all-or-nothing: when any step
// fails, the interface is cleared rather than left half-configured.
package shaper

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// TBFLatency bounds how long a packet may wait in a tbf kubeshaper sets up
// (tbf's `latency`); beyond it tbf drops, as the CNI bandwidth plugin does.
const TBFLatency = 50 * time.Millisecond

// Filter names, as `tc filter show` and `bpftool prog` show them.
const (
	FilterEgress  = attach.NamePrefix + "_pod_egress"  // host veth tc ingress
	FilterIngress = attach.NamePrefix + "_pod_ingress" // host veth tc egress
	FilterPodEDT  = attach.NamePrefix + "_pod_edt"     // pod eth0 tc egress
)

// Interface is a pod's host-side veth and, when known, its pod end.
type Interface struct {
	Name  string // host-side veth, in the caller's netns
	Index int
	// Pod is the pod end; PodNetns is empty when it is unknown (the pod is
	// gone), in which case only host-side state is touched.
	Pod podnet.PodVeth
	// PodSide asks for a direction to be handled on the pod's own
	// interface (inside its netns) rather than on the host veth: where
	// deliveries skip the host veth's hooks (bpf_redirect_peer, a foreign
	// program that ends the hook). Pod egress with EDT always runs there.
	PodSide [2]bool
}

// ErrPodSideMode is returned for a pod-side pod-ingress rule that needs a
// qdisc on the host veth (mode=tbf, pace mode, delay): the deliveries that
// skip the host veth's hooks skip its qdisc too.
var ErrPodSideMode = errors.New("pod ingress handled at the pod (the host veth is bypassed) supports mode=drop only: mode=tbf, pace mode and delay need the host veth's qdisc, which the bypassing deliveries skip")

// ErrNeedsFQ is returned for rules that need the fq qdisc (pace mode,
// delay) on a kernel without sch_fq.
var ErrNeedsFQ = errors.New("pace mode and delay need the sch_fq qdisc (EDT pacing), which this kernel does not have: use mode=drop or mode=tbf, or a kernel with CONFIG_NET_SCH_FQ")

// Shaper applies policies with one loaded datapath.
type Shaper struct {
	dp *datapath.Datapath
	// Flows keeps per-flow records (kubeshaper flows, flow export) for
	// every interface applied from now on.
	Flows bool
	// Services resolves the Services rules target (to=svc:ns/name) to
	// their addresses; nil resolves none.
	Services datapath.ServicePeers
	// ProgramDir is the admin's directory of custom programs
	// (kubeshaper.io/program); empty refuses them.
	ProgramDir string
	// YieldTo names tcx programs (kernel program names) that must stay
	// in front of kubeshaper's: the admin's choice. kubeshaper then runs
	// right after them, and cannot vouch for what they end.
	YieldTo map[string]bool

	pacing pacingState
	// progNames: the custom program behind each tcx pin (programs.go).
	progNames programNames
	// PreferTCX attaches as a tcx link at the head even where no other
	// program is on the hook (where the kernel has tcx): for measuring
	// the tcx path against cls_bpf, and for admins who want it.
	PreferTCX bool
}

// New returns a Shaper using dp, with per-flow records on.
func New(dp *datapath.Datapath) *Shaper { return &Shaper{dp: dp, Flows: true} }

// Apply makes ifc carry pol. An empty policy still attaches the programs:
// every pod is counted (monitoring) whether or not it has a rule.
func (s *Shaper) Apply(ifc Interface, pol rules.Policy) error {
	var cfgs [2]datapath.Config
	for _, d := range rules.Directions {
		c, err := datapath.ConfigFor(pol[d])
		if err != nil {
			return fmt.Errorf("%s %s: %w", ifc.Name, d, err)
		}
		if s.Flows {
			c.EnableFlows()
		}
		cfgs[d] = c
	}
	// Pod egress EDT needs a qdisc that honours timestamps on the path the
	// pod's packets leave by: its own eth0, under fq.
	if cfgs[rules.Egress].NeedsFQ() {
		cfgs[rules.Egress].SetAtPod()
	}
	for _, d := range rules.Directions {
		if !ifc.PodSide[d] {
			continue
		}
		if ifc.Pod.NetnsPath == "" {
			return fmt.Errorf("%s %s: the rule is to run at the pod's own interface, but the pod end of %s was not found", ifc.Name, d, ifc.Name)
		}
		if d == rules.Ingress && (cfgs[d].NeedsFQ() || cfgs[d].UsesTBF()) {
			return fmt.Errorf("%s %s: %w", ifc.Name, d, ErrPodSideMode)
		}
		cfgs[d].SetAtPod()
	}
	if err := s.preflight(ifc, cfgs); err != nil {
		return err
	}
	if err := s.apply(ifc, pol, cfgs, s.previous(ifc.Index)); err != nil {
		// Never leave a half-applied rule behind.
		if cerr := s.Clear(ifc); cerr != nil {
			err = errors.Join(err, fmt.Errorf("rolling back %s: %w", ifc.Name, cerr))
		}
		return err
	}
	// Socket pacing is best effort on top of the policer: its failure is
	// not the rule's. The node's (no cgroup v2, an old kernel) is
	// PacingError; a pod's own (its netns gone meanwhile) is
	// LastPodPacingError, and status shows the rule as policer only.
	if err := s.pace(ifc, pol); err != nil {
		s.pacing.mu.Lock()
		s.pacing.podErr = err
		s.pacing.mu.Unlock()
	}
	return nil
}

// preflight refuses, before anything changes, what cannot work here. The
// fq qdiscs are its only changes: creating one is how a kernel without
// sch_fq is found out.
func (s *Shaper) preflight(ifc Interface, cfgs [2]datapath.Config) error {
	if ifc.Pod.NetnsPath == "" {
		if cfgs[rules.Egress].UsesTBF() || cfgs[rules.Egress].NeedsFQ() {
			return fmt.Errorf("%s egress: mode=tbf, pace mode and delay act on the pod's own interface, but the pod end of %s was not found", ifc.Name, ifc.Name)
		}
	}
	fq := func(d rules.Direction, err error) error {
		if errors.Is(err, attach.ErrFQUnavailable) {
			return fmt.Errorf("%s %s: %w", ifc.Name, d, ErrNeedsFQ)
		}
		return err
	}
	if c := cfgs[rules.Ingress]; c.NeedsFQ() {
		if err := fq(rules.Ingress, attach.EnsureRootFQ(ifc.Index, true, c.Horizon)); err != nil {
			return err
		}
	}
	if c := cfgs[rules.Egress]; c.NeedsFQ() {
		err := podnet.Do(ifc.Pod.NetnsPath, func() error {
			return attach.EnsureRootFQ(ifc.Pod.IfIndex, true, c.Horizon)
		})
		if err := fq(rules.Egress, err); err != nil {
			return err
		}
	}
	return nil
}

// previous reads the rules the maps hold for ifindex: what this or an
// earlier agent applied (pinned state survives restarts). It tells which
// qdiscs and pod-side filters may exist, so the common case — no tbf, no
// EDT before or after — costs no netlink dump and no netns entry for them.
// A missing entry means a fresh veth: nothing of ours can be on it.
func (s *Shaper) previous(ifindex int) (prev [2]*datapath.Config) {
	for _, d := range rules.Directions {
		if c, ok, err := s.dp.Lookup(datapath.KeyOf(ifindex, d)); err == nil && ok {
			prev[d] = &c
		}
	}
	return prev
}

// ownsQdisc reports whether a rule owns a root qdisc (tbf, fq): a pod
// ingress rule the host veth's, a pod egress rule the pod eth0's (and, for
// EDT, its tc egress filter).
func ownsQdisc(c *datapath.Config) bool { return c != nil && (c.UsesTBF() || c.NeedsFQ()) }

// ownsPod reports whether a pod egress rule owns anything on the pod's
// interface: a root qdisc, or the pod-side program.
func ownsPod(c *datapath.Config) bool { return ownsQdisc(c) || (c != nil && c.AtPod()) }

// podIngress puts the pod-side ingress program on the pod interface's tc
// ingress when pod ingress is handled there, and takes it off when it no
// longer is.
func (s *Shaper) podIngress(ifc Interface, c datapath.Config, prev *datapath.Config) error {
	if ifc.Pod.NetnsPath == "" || (!c.AtPod() && (prev == nil || !prev.AtPod())) {
		return nil
	}
	site := s.podSite(ifc, rules.Ingress)
	var prog *ebpf.Program
	if c.AtPod() {
		p, err := s.dp.PodSideProgram(ifc.Index, rules.Ingress)
		if err != nil {
			return err
		}
		defer p.Close() // the attachment holds its own reference
		prog = p
	}
	err := podnet.Do(ifc.Pod.NetnsPath, func() error {
		if prog == nil {
			return s.unplace(site)
		}
		_, err := s.place(site, prog)
		return err
	})
	if err != nil {
		return fmt.Errorf("pod end of %s (%s in %s): %w", ifc.Name, ifc.Pod.IfName, ifc.Pod.NetnsPath, err)
	}
	return nil
}

func (s *Shaper) apply(ifc Interface, pols rules.Policy, cfgs [2]datapath.Config, prev [2]*datapath.Config) error {
	// Maps first, then filters: a filter never runs without its config;
	// a target's peers before the rule that uses them.
	for _, d := range rules.Directions {
		key := datapath.KeyOf(ifc.Index, d)
		if cfgs[d].Targeted() || (prev[d] != nil && prev[d].Targeted()) {
			if err := s.dp.SetPeers(key, datapath.PeersFor(pols[d], s.Services)); err != nil {
				return fmt.Errorf("%s: %w", ifc.Name, err)
			}
		}
		if err := s.dp.Set(key, cfgs[d]); err != nil {
			return fmt.Errorf("%s: %w", ifc.Name, err)
		}
	}
	for _, d := range rules.Directions {
		if _, err := s.place(s.hostSite(ifc, d), s.dp.Program(d)); err != nil {
			return err
		}
	}
	if err := s.podIngress(ifc, cfgs[rules.Ingress], prev[rules.Ingress]); err != nil {
		return err
	}
	if ownsQdisc(prev[rules.Ingress]) || ownsQdisc(&cfgs[rules.Ingress]) {
		if err := s.hostQdisc(ifc, cfgs[rules.Ingress]); err != nil {
			return err
		}
	}
	if ownsPod(prev[rules.Egress]) || ownsPod(&cfgs[rules.Egress]) {
		if err := s.podQdisc(ifc, cfgs[rules.Egress]); err != nil {
			return err
		}
	}
	if cfgs[rules.Egress].Corrupts() || (prev[rules.Egress] != nil && prev[rules.Egress].Corrupts()) {
		return s.podChecksums(ifc, !cfgs[rules.Egress].Corrupts())
	}
	return nil
}

// podChecksums turns TX checksum offload on the pod's eth0 off while a
// corrupt rule acts on pod egress, and back on after. With offload on, the
// pod's packets leave CHECKSUM_PARTIAL: no receiver on this node checks
// them, so a flipped bit would go unnoticed (bpf/shaper.c, ks_corrupt);
// off, the pod's kernel completes every checksum and the receiver's check
// catches the corruption, as on a real link.
func (s *Shaper) podChecksums(ifc Interface, offload bool) error {
	if ifc.Pod.NetnsPath == "" {
		return nil
	}
	err := podnet.Do(ifc.Pod.NetnsPath, func() error { return attach.SetTxChecksum(ifc.Pod.IfName, offload) })
	if err != nil {
		return fmt.Errorf("pod end of %s (%s in %s): %w", ifc.Name, ifc.Pod.IfName, ifc.Pod.NetnsPath, err)
	}
	return nil
}

// hostQdisc owns the host veth's root qdisc: what the pod receives.
func (s *Shaper) hostQdisc(ifc Interface, c datapath.Config) error {
	switch {
	case c.UsesTBF():
		return attach.EnsureRootTBF(ifc.Index, c.Rate, c.Burst, TBFLatency)
	case c.NeedsFQ():
		return attach.EnsureRootFQ(ifc.Index, true, c.Horizon)
	}
	return attach.RemoveRootQdiscIfOurs(ifc.Index)
}

// podQdisc owns the pod interface's root qdisc and tc egress: what the pod
// sends. A tbf there is the only place a queue can hold the pod's egress
// without an ifb (measured wire ratio 1.00 here; see the README); EDT needs
// fq there and the pod-side program stamping departure times.
func (s *Shaper) podQdisc(ifc Interface, c datapath.Config) error {
	if ifc.Pod.NetnsPath == "" {
		return nil
	}
	var prog *ebpf.Program
	if c.AtPod() {
		p, err := s.dp.PodSideProgram(ifc.Index, rules.Egress)
		if err != nil {
			return err
		}
		defer p.Close() // the filter holds its own reference
		prog = p
	}
	site := s.podSite(ifc, rules.Egress)
	err := podnet.Do(ifc.Pod.NetnsPath, func() error {
		if prog != nil {
			if _, err := s.place(site, prog); err != nil {
				return err
			}
		} else if err := s.unplace(site); err != nil {
			return err
		}
		switch {
		case c.UsesTBF():
			return attach.EnsureRootTBF(ifc.Pod.IfIndex, c.Rate, c.Burst, TBFLatency)
		case c.NeedsFQ():
			return attach.EnsureRootFQ(ifc.Pod.IfIndex, true, c.Horizon)
		}
		return attach.RemoveRootQdiscIfOurs(ifc.Pod.IfIndex)
	})
	if err != nil {
		return fmt.Errorf("pod end of %s (%s in %s): %w", ifc.Name, ifc.Pod.IfName, ifc.Pod.NetnsPath, err)
	}
	return nil
}

// hookOf is where a direction of the pod runs on its host veth.
func hookOf(d rules.Direction) attach.Hook {
	if d == rules.Ingress {
		return attach.HookEgress
	}
	return attach.HookIngress
}

// ProgramStatus is what ApplyPrograms did for one direction.
type ProgramStatus struct {
	// Filter is the name the rule's program filter has (or would have:
	// it changes with the object file and the parameters); "" without a
	// program.
	Filter string
	// Err is why the program is not running, nil if it is (or none is
	// asked for). A *datapath.ProgramError when the file or the load
	// failed.
	Err error
}

// Clear removes everything kubeshaper put on ifc: both filters, the map
// entries of both directions, and qdiscs it created (host and pod side).
// Other tools' filters and qdiscs are left alone. It tries every step and
// reports all failures.
func (s *Shaper) Clear(ifc Interface) error {
	var errs []error
	for _, d := range rules.Directions {
		// Custom programs first: the clsact goes with the last filter.
		if err := s.removeProgram(s.hostSite(ifc, d)); err != nil {
			errs = append(errs, err)
		}
		if err := s.unplace(s.hostSite(ifc, d)); err != nil && !isGone(err) {
			errs = append(errs, err)
		}
	}
	// With the rules still in the maps, they say what else exists; without
	// them (leftovers of a crash) everything is checked.
	prev := s.previous(ifc.Index)
	known := prev[rules.Egress] != nil && prev[rules.Ingress] != nil
	if !known || ownsQdisc(prev[rules.Ingress]) {
		if err := attach.RemoveRootQdiscIfOurs(ifc.Index); err != nil && !isGone(err) {
			errs = append(errs, err)
		}
	}
	if prev[rules.Egress] != nil && prev[rules.Egress].Corrupts() {
		if err := s.podChecksums(ifc, true); err != nil && !isGone(err) {
			errs = append(errs, err)
		}
	}
	podOwned := !known || ownsPod(prev[rules.Egress]) || prev[rules.Ingress].AtPod()
	if ifc.Pod.NetnsPath != "" && podOwned {
		err := podnet.Do(ifc.Pod.NetnsPath, func() error {
			pe, pi := s.podSite(ifc, rules.Egress), s.podSite(ifc, rules.Ingress)
			return errors.Join(s.removeProgram(pe), s.removeProgram(pi), s.unplace(pe), s.unplace(pi),
				attach.RemoveRootQdiscIfOurs(ifc.Pod.IfIndex))
		})
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("pod end of %s: %w", ifc.Name, err))
		}
	}
	// Pod-side tcx links of a pod whose netns is gone went with it; their
	// pins are released here.
	for _, d := range rules.Directions {
		if err := attach.DetachTCX(s.podSite(ifc, d).pin); err != nil && !isGone(err) {
			errs = append(errs, err)
		}
	}
	if err := s.unpace(ifc.Index); err != nil {
		errs = append(errs, err)
	}
	// Entries last: until the filters are gone they keep the pod counted.
	if err := s.dp.DeleteInterface(ifc.Index); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ForgetIndex removes the map entries of an interface that no longer
// exists (its filters went with it).
func (s *Shaper) ForgetIndex(ifindex int) error {
	return errors.Join(s.forgetTCX(ifindex), s.unpace(ifindex), s.dp.DeleteInterface(ifindex))
}
