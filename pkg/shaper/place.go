package shaper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Where kubeshaper's program sits on a hook, and how it gets there:
//   - alone on the hook: a cls_bpf filter in our slot (pref 1, handle
//     0x4b53), visible to `tc filter show`, as always;
//   - another tool's program is there (a tcx link, or a cls_bpf filter that
//     runs before ours) and the kernel has tcx: a tcx link at the head of
//     the chain (after the programs of Shaper.YieldTo), pinned under the pin
//     directory, and our cls_bpf filter removed so that no packet is seen
//     twice; once on tcx a hook stays there until cleared;
//   - the same without tcx: our cls_bpf filter deleted and added again, so
//     that it is the most recently added of pref 1 and runs first.
// Nothing of another tool is ever moved, replaced or deleted.

// FilterPodIngress is the pod-side ingress filter's name (pod eth0 tc
// ingress): what the pod receives, where the host side is bypassed.
const FilterPodIngress = attach.NamePrefix + "_pod_side_in"

// hookSite is one hook kubeshaper occupies for a pod.
type hookSite struct {
	dir     rules.Direction
	podSide bool
	ifindex int // host veth, or the pod's interface (inside its netns)
	hook    attach.Hook
	name    string // cls_bpf filter name
	pin     string // where its tcx link is pinned
}

// sites lists where ifc's directions run: pod-side directions on the
// pod's interface, the rest on the host veth. The host veth's hooks are
// always occupied (they count the pod even when a direction runs at the
// pod; the datapath's at-pod flag keeps the host-side program out).
func (s *Shaper) hostSite(ifc Interface, d rules.Direction) hookSite {
	name := FilterEgress
	if d == rules.Ingress {
		name = FilterIngress
	}
	h := hookOf(d)
	return hookSite{dir: d, ifindex: ifc.Index, hook: h, name: name,
		pin: filepath.Join(s.dp.PinDir(), "tcx", fmt.Sprintf("%d-%s", ifc.Index, h))}
}

func (s *Shaper) podSite(ifc Interface, d rules.Direction) hookSite {
	// The pod's interface: tc egress is what the pod sends.
	h, name := attach.HookEgress, FilterPodEDT
	if d == rules.Ingress {
		h, name = attach.HookIngress, FilterPodIngress
	}
	return hookSite{dir: d, podSide: true, ifindex: ifc.Pod.IfIndex, hook: h, name: name,
		pin: filepath.Join(s.dp.PinDir(), "tcx", fmt.Sprintf("pod-%d-%s", ifc.Index, h))}
}

// place puts prog on the site's hook so that it runs first (see above).
// Runs in the netns holding the site's interface. Returns whether the
// position had to be taken (it was missing or another program ran first).
func (s *Shaper) place(site hookSite, prog *ebpf.Program) (moved bool, err error) {
	cur, onTCX, err := attach.PinnedTCX(site.pin)
	if err != nil {
		return false, err
	}
	chain, err := attach.Chain(site.ifindex, site.hook, cur.LinkID)
	if err != nil {
		return false, err
	}
	foreignTCX, foreignFirst, ours := false, false, false
	for _, e := range chain {
		switch {
		case e.TCX && !e.Ours:
			foreignTCX = true
		case !e.TCX && e.Ours && e.Pref == attach.FilterPriority:
			ours = true
		case !e.TCX && !e.Ours && !ours:
			foreignFirst = true
		}
	}
	foreignFirst = foreignFirst && ours // without ours, adding it makes it first
	if attach.TCXSupported() && (s.PreferTCX || onTCX || foreignTCX || foreignFirst) {
		_, moved, err := attach.AttachTCXFirst(site.ifindex, site.hook, prog, site.pin, s.YieldTo)
		if err != nil {
			return false, err
		}
		// Never twice: the tcx link replaces our filter.
		if ours {
			if err := attach.DetachFilter(site.ifindex, site.hook); err != nil {
				return moved, err
			}
		}
		// A custom program follows ours onto tcx, right behind it.
		if err := s.followProgram(site); err != nil {
			return moved, err
		}
		return moved, nil
	}
	if foreignFirst {
		return true, attach.AttachFilterFirst(site.ifindex, site.hook, prog.FD(), site.name)
	}
	return !ours, attach.AttachFilter(site.ifindex, site.hook, prog.FD(), site.name)
}

// unplace removes our program from the site's hook: the tcx link and the
// filter, whichever exist. Runs in the netns holding the interface.
func (s *Shaper) unplace(site hookSite) error {
	if err := attach.DetachTCX(site.pin); err != nil {
		return err
	}
	return attach.DetachFilter(site.ifindex, site.hook)
}

// Placement is what runs on one hook of a pod, as `kubeshaper status` and
// the agent report it.
type Placement struct {
	Direction rules.Direction
	PodSide   bool   // on the pod's own interface
	Hook      string // "ingress" or "egress" of that interface
	// Attachment names ours: "tcx link 12 (prog 40)" or "cls_bpf
	// kubeshaper_pod_egress (prog 42, pref 1 handle 0x4b53)"; "" when
	// nothing of ours is there.
	Attachment string
	// Ahead lists other tools' programs that run before ours on the hook
	// (any tool's, when ours is missing); Yielded those of them kubeshaper
	// lets run first on purpose (Shaper.YieldTo): the position is held,
	// but what they end is not seen.
	Ahead, Yielded []attach.Entry
	Err            error
}

// First reports whether ours is there and runs before everything else.
func (p Placement) First() bool { return p.Err == nil && p.Attachment != "" && len(p.Ahead) == 0 }

func (p Placement) String() string {
	where := "host " + p.Hook
	if p.PodSide {
		where = "pod " + p.Hook
	}
	if p.Attachment == "" {
		return where + ": none"
	}
	return where + ": " + p.Attachment
}

// AheadString names every program that runs before ours (yielded ones
// included), for reasons and Events.
func (p Placement) AheadString() string {
	var n []string
	for _, e := range append(append([]attach.Entry(nil), p.Yielded...), p.Ahead...) {
		n = append(n, e.String())
	}
	return strings.Join(n, ", ")
}

// Foreign reports whether any other program runs before ours.
func (p Placement) Foreign() bool { return len(p.Ahead)+len(p.Yielded) > 0 }

// inspect reads a site's placement. Runs in the netns of its interface.
func (s *Shaper) inspect(site hookSite) Placement {
	p := Placement{Direction: site.dir, PodSide: site.podSide, Hook: site.hook.String()}
	cur, onTCX, err := attach.PinnedTCX(site.pin)
	if err != nil {
		p.Err = err
		return p
	}
	if onTCX && cur.Ifindex != site.ifindex {
		onTCX = false
	}
	chain, err := attach.Chain(site.ifindex, site.hook, cur.LinkID)
	if err != nil {
		p.Err = err
		return p
	}
	for _, e := range chain {
		if e.Ours && (e.TCX || e.Pref == attach.FilterPriority) {
			if e.TCX {
				p.Attachment = fmt.Sprintf("tcx link %d (prog %d)", e.LinkID, e.ProgID)
			} else {
				p.Attachment = fmt.Sprintf("cls_bpf %s (prog %d, pref %d handle %#x)", e.Name, e.ProgID, e.Pref, e.Handle)
			}
			break
		}
		switch {
		case e.Ours:
		case e.TCX && len(p.Ahead) == 0 && s.YieldTo[e.Name]:
			p.Yielded = append(p.Yielded, e)
		default:
			p.Ahead = append(p.Ahead, e)
		}
	}
	if p.Attachment == "" {
		p.Ahead, p.Yielded = nil, nil
		for _, e := range chain {
			if !e.Ours {
				p.Ahead = append(p.Ahead, e)
			}
		}
	}
	return p
}

// Placements reports, for each direction, the hook that enforces it (the
// pod-side one for directions handled at the pod) and what runs there.
// Runs in the node netns (the caller's); enters the pod's for pod-side
// directions.
func (s *Shaper) Placements(ifc Interface) [2]Placement {
	var out [2]Placement
	atPod := s.atPod(ifc)
	for _, d := range rules.Directions {
		if atPod[d] && ifc.Pod.NetnsPath != "" {
			site := s.podSite(ifc, d)
			err := podnet.Do(ifc.Pod.NetnsPath, func() error { out[d] = s.inspect(site); return nil })
			if err != nil {
				out[d] = Placement{Direction: d, PodSide: true, Hook: site.hook.String(), Err: err}
			}
			continue
		}
		out[d] = s.inspect(s.hostSite(ifc, d))
	}
	return out
}

// atPod reads which directions the maps mark as handled at the pod.
func (s *Shaper) atPod(ifc Interface) [2]bool {
	var out [2]bool
	prev := s.previous(ifc.Index)
	for _, d := range rules.Directions {
		out[d] = prev[d] != nil && prev[d].AtPod()
	}
	return out
}

// Hold puts kubeshaper's programs back where they must be on ifc when
// another tool deleted them or got in front of them; what is in place is
// left untouched (no program reload). Returns the placements that had to
// be retaken, as they were found. Runs in the node netns.
func (s *Shaper) Hold(ifc Interface) (retaken []Placement, err error) {
	atPod := s.atPod(ifc)
	for _, d := range rules.Directions {
		site := s.hostSite(ifc, d)
		p := s.inspect(site)
		if p.Err != nil {
			return retaken, p.Err
		}
		if !p.First() {
			if _, err := s.place(site, s.dp.Program(d)); err != nil {
				return retaken, err
			}
			retaken = append(retaken, p)
		} else if err := s.followProgram(site); err != nil {
			return retaken, err
		}
		if !atPod[d] || ifc.Pod.NetnsPath == "" {
			continue
		}
		ps := s.podSite(ifc, d)
		var pp Placement
		err := podnet.Do(ifc.Pod.NetnsPath, func() error {
			pp = s.inspect(ps)
			if pp.Err != nil {
				return pp.Err
			}
			if pp.First() {
				return s.followProgram(ps)
			}
			prog, err := s.dp.PodSideProgram(ifc.Index, d)
			if err != nil {
				return err
			}
			defer prog.Close()
			_, err = s.place(ps, prog)
			return err
		})
		if err != nil {
			return retaken, fmt.Errorf("pod end of %s: %w", ifc.Name, err)
		}
		if !pp.First() {
			retaken = append(retaken, pp)
		}
	}
	return retaken, nil
}

// TCXRevisions is the tcx chain revision of each of ifc's host-veth hooks:
// tcx changes send no netlink notification, so the agent polls these (one
// syscall each) and calls Hold when one moves.
func (s *Shaper) TCXRevisions(ifc Interface) [2]uint64 {
	return [2]uint64{attach.TCXRevision(ifc.Index, attach.HookIngress), attach.TCXRevision(ifc.Index, attach.HookEgress)}
}

// WatchTC subscribes to tc and link notifications in the caller's netns
// (see attach.TCWatch).
func WatchTC() (*attach.TCWatch, error) { return attach.WatchTC() }

// Attached reports whether kubeshaper's programs are on every hook ifc's
// directions run at (first or not). Runs in the node netns.
func (s *Shaper) Attached(ifc Interface) bool {
	for _, p := range s.Placements(ifc) {
		if p.Err != nil || p.Attachment == "" {
			return false
		}
	}
	return true
}

// tcxPinned lists the host ifindexes that have tcx links pinned (host or
// pod side): what a leftover collection must look at besides map keys and
// filters.
func (s *Shaper) tcxPinned() []int {
	ents, err := os.ReadDir(filepath.Join(s.dp.PinDir(), "tcx"))
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		var idx int
		var hook string
		name := strings.TrimPrefix(e.Name(), "pod-")
		if _, err := fmt.Sscanf(strings.Replace(name, "-", " ", 1), "%d %s", &idx, &hook); err == nil && idx > 0 {
			out = append(out, idx)
		}
	}
	return out
}

// forgetTCX releases the tcx pins of a host ifindex whose interface is
// gone: reading a defunct link's pin removes it. A live link (the index
// already reused by a new veth that carries ours) is left alone.
func (s *Shaper) forgetTCX(ifindex int) error {
	ifc := Interface{Index: ifindex}
	var errs []error
	for _, d := range rules.Directions {
		host, pod := s.hostSite(ifc, d), s.podSite(ifc, d)
		for _, pin := range []string{host.pin, programPin(host), pod.pin, programPin(pod)} {
			_, _, err := attach.PinnedTCX(pin)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
