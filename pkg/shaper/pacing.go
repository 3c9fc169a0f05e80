package shaper

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/sockpace"
)

// Cooperative pacing (issue 13): a drop-mode rule also paces the pod's own
// TCP sockets (and same-node senders' sockets to it) with a sock_ops
// program, so that TCP sends at the limit by itself and the policer, still
// the hard cap, rarely has to drop. Pacing is best effort: when it cannot
// be set up (no cgroup v2, a kernel without the helpers), the rule is
// enforced by the policer alone and PacingError says why.

// Paced reports whether a bandwidth rule gets socket pacing where the node
// supports it: drop mode (the default), all of the direction's traffic
// (a targeted rule limits some peers only, which a socket-wide rate cannot
// express), and not turned off with pacing=off.
func Paced(bw *rules.Bandwidth) bool {
	return bw != nil && (bw.Mode == rules.ModeDrop || bw.Mode == "") && bw.Target.IsZero() && !bw.NoSocketPacing
}

// pacingState is the shaper's socket-pacing half.
type pacingState struct {
	mu     sync.Mutex
	pacer  *sockpace.Pacer
	err    error         // why pacing is unavailable on the node (after a try)
	podErr error         // the last pod whose pacing could not be set, and why
	tried  bool          // Open/Attach attempted
	podns  map[int]podNS // by host ifindex: every pod applied, paced or not
	nodeNS uint64
	pods   int // the pod count the pacer's maps were sized for
}

// podNS is what socket pacing needs to know of a pod: its netns cookie
// (its egress rule paces its sockets only; its senders are same-node
// senders for others' ingress rules) and its addresses.
type podNS struct {
	path   string
	cookie uint64
	addrs  []netip.Addr
}

// PacingError is why socket pacing is not in effect on this node (nil when
// it is, or was never needed).
func (s *Shaper) PacingError() error {
	s.pacing.mu.Lock()
	defer s.pacing.mu.Unlock()
	return s.pacing.err
}

// LastPodPacingError is why the last pod whose socket pacing failed on a
// node where it works got the policer alone (nil if none did).
func (s *Shaper) LastPodPacingError() error {
	s.pacing.mu.Lock()
	defer s.pacing.mu.Unlock()
	if s.pacing.err != nil {
		return nil
	}
	return s.pacing.podErr
}

// pace makes the socket-pacing maps carry pol for ifc. Called after the
// TC side is in place, in the node netns. Errors are returned for the
// caller to report; the TC rules stand regardless.
func (s *Shaper) pace(ifc Interface, pol rules.Policy) error {
	var r sockpace.Rule
	if bw := pol[rules.Egress].Bandwidth; Paced(bw) {
		r.EgressBitsPerSec = bw.RateBitsPerSec
	}
	if bw := pol[rules.Ingress].Bandwidth; Paced(bw) {
		r.IngressBitsPerSec = bw.RateBitsPerSec
	}
	s.pacing.mu.Lock()
	defer s.pacing.mu.Unlock()
	ns, nsErr := s.podNetns(ifc)
	if r == (sockpace.Rule{}) {
		// Not paced itself, but a same-node sender for others' rules.
		if s.pacing.pacer == nil && !s.pacing.tried && sockpace.Pinned(s.dp.PinDir()) {
			// An earlier agent's pacing: load it now, not at the next
			// paced pod, so that its maps get this node's size (and
			// an older build's maps are replaced) at start. Failing,
			// the pinned maps are written as they are.
			_, _ = s.openPacer()
		}
		if s.pacing.pacer != nil {
			if nsErr == nil {
				_ = s.pacing.pacer.AddNetns(ns.cookie, ifc.Index)
			}
			return s.pacing.pacer.Set(ifc.Index, nil, 0, r)
		}
		return sockpace.SetUnpaced(s.dp.PinDir(), ifc.Index, ns.cookie)
	}
	// The node's capability first: on a kernel without socket pacing
	// (sock_ops netns cookies, Linux < 5.15) reading the pod's cookie
	// fails too, and that is the node's condition, not this pod's.
	if _, err := s.openPacer(); err != nil {
		return err
	}
	if nsErr != nil {
		return fmt.Errorf("socket pacing for %s: %w", ifc.Name, nsErr)
	}
	return s.withRoom(func(p *sockpace.Pacer) error {
		if err := p.AddNetns(ns.cookie, ifc.Index); err != nil {
			return err
		}
		return p.Set(ifc.Index, ns.addrs, ns.cookie, r)
	})
}

// withRoom runs f on the pacer; when a map is full (more pods, or more
// addresses a pod, than the node's size allows for), it grows the maps
// and runs f again. Callers hold s.pacing.mu.
func (s *Shaper) withRoom(f func(*sockpace.Pacer) error) error {
	err := f(s.pacing.pacer)
	if !sockpace.Full(err) {
		return err
	}
	p, gerr := s.growPacer()
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	return f(p)
}

// growPacer replaces the pacer by one whose maps are sized for twice the
// pods, while the agent runs: Open and Attach carry every entry over and
// switch the pinned link in place (as at a start on a grown node), so no
// state is lost and no restart is needed. Maps never shrink: the next
// start keeps this size. Callers hold s.pacing.mu.
func (s *Shaper) growPacer() (*sockpace.Pacer, error) {
	pods := 2 * max(s.pacing.pods, s.dp.MaxPods(), 1)
	p, err := sockpace.Open(s.dp.PinDir(), sockpace.Options{Pods: pods, Logf: s.dp.Logf})
	if err != nil {
		return nil, fmt.Errorf("growing the socket-pacing maps for %d pods: %w", pods, err)
	}
	if err := p.Attach(); err != nil {
		p.Close()
		return nil, fmt.Errorf("growing the socket-pacing maps for %d pods: %w", pods, err)
	}
	s.pacing.pacer.Close()
	s.pacing.pacer, s.pacing.pods = p, pods
	s.dp.Logf("socket-pacing maps were full: grown for %d pods while running", pods)
	return p, nil
}

// podNetns reads (once per pod netns) the pod end's netns cookie and
// addresses. Callers hold s.pacing.mu.
func (s *Shaper) podNetns(ifc Interface) (podNS, error) {
	if ifc.Pod.NetnsPath == "" {
		return podNS{}, errors.New("the pod end of the veth is unknown")
	}
	if ns, ok := s.pacing.podns[ifc.Index]; ok && ns.path == ifc.Pod.NetnsPath {
		return ns, nil
	}
	ns := podNS{path: ifc.Pod.NetnsPath}
	err := podnet.Do(ifc.Pod.NetnsPath, func() error {
		c, err := sockpace.NetnsCookie()
		if err != nil {
			return err
		}
		ns.cookie = c
		l, err := net.InterfaceByIndex(ifc.Pod.IfIndex)
		if err != nil {
			return err
		}
		as, err := l.Addrs()
		if err != nil {
			return err
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.IsGlobalUnicast() {
					ns.addrs = append(ns.addrs, ip.Unmap())
				}
			}
		}
		return nil
	})
	if err != nil {
		return podNS{}, fmt.Errorf("reading the pod's netns %s: %w", ifc.Pod.NetnsPath, err)
	}
	if s.pacing.podns == nil {
		s.pacing.podns = map[int]podNS{}
	}
	s.pacing.podns[ifc.Index] = ns
	return ns, nil
}

// openPacer loads and attaches the program on first use, registering the
// node's own netns and every pod seen so far as same-node senders.
// Callers hold s.pacing.mu.
func (s *Shaper) openPacer() (*sockpace.Pacer, error) {
	if s.pacing.pacer != nil || s.pacing.tried {
		return s.pacing.pacer, s.pacing.err
	}
	s.pacing.tried = true
	fail := func(err error) (*sockpace.Pacer, error) {
		s.pacing.err = fmt.Errorf("socket pacing unavailable, the policer alone enforces drop-mode rules: %w", err)
		return nil, s.pacing.err
	}
	node, err := sockpace.NetnsCookie()
	if err != nil {
		return fail(err)
	}
	// Sized as the datapath's maps: from the node's pod capacity (the
	// agent: the Node's allocatable pods or --max-pods; the CLI: the
	// maps already pinned, or the kubelet's default).
	pods := s.dp.MaxPods()
	p, err := sockpace.Open(s.dp.PinDir(), sockpace.Options{Pods: pods, Logf: s.dp.Logf})
	if err != nil {
		return fail(err)
	}
	if err := p.Attach(); err != nil {
		p.Close()
		return fail(err)
	}
	if err := p.AddNetns(node, 0); err != nil {
		p.Close()
		return fail(err)
	}
	for ix, ns := range s.pacing.podns {
		_ = p.AddNetns(ns.cookie, ix)
	}
	s.pacing.pacer, s.pacing.nodeNS, s.pacing.pods = p, node, pods
	return p, nil
}

// unpace removes ifc's pacing entries (Clear, ForgetIndex).
// It holds the pacing lock while it writes: Attach copies the pinned
// maps' entries into their replacements (a node whose pod capacity grew),
// and a deletion between that copy and the new pins would be undone.
func (s *Shaper) unpace(ifindex int) error {
	s.pacing.mu.Lock()
	defer s.pacing.mu.Unlock()
	delete(s.pacing.podns, ifindex)
	return sockpace.ClearIndex(s.dp.PinDir(), ifindex)
}

// ClosePacing releases this process's handles on the pacing program (the
// pinned link keeps it attached).
func (s *Shaper) ClosePacing() {
	s.pacing.mu.Lock()
	defer s.pacing.mu.Unlock()
	if s.pacing.pacer != nil {
		s.pacing.pacer.Close()
		s.pacing.pacer = nil
	}
}
