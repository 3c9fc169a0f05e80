package shaper

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// A custom program (kubeshaper.io/program) runs right behind kubeshaper's
// own program for its direction — on the host veth, or on the pod's own
// interface where the direction is handled there (deliveries that skip the
// host veth would skip the program too) — in the form ours has there:
//   - ours a cls_bpf filter (pref 1): the custom program is a cls_bpf
//     filter in the second slot (pref 2), which the kernel runs next;
//   - ours a tcx link (another tool's program is on the hook): the custom
//     program is a tcx link anchored right behind ours, pinned beside it
//     (<our pin>-program). Left a cls_bpf filter it would run after every
//     tcx program, and not at all behind one that ends the hook (Cilium's
//     cil_from_container returns TC_ACT_OK or redirects).
// A custom program passes a packet on with TC_ACT_UNSPEC, which is also
// TCX_NEXT: the other tool's program still runs behind it.

// programPin is where the site's custom program's tcx link is pinned.
func programPin(site hookSite) string { return site.pin + "-program" }

// programNames remembers the name (file and parameters digest) of the
// custom program behind each tcx pin: a tcx link carries no name of its
// own. Lost with the process: an agent that restarts reloads the program
// once and swaps it into the link it finds (position kept).
type programNames struct {
	mu sync.Mutex
	m  map[string]string
}

func (n *programNames) get(pin string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[pin]
}

func (n *programNames) set(pin, name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]string{}
	}
	if name == "" {
		delete(n.m, pin)
		return
	}
	n.m[pin] = name
}

// ourTCX returns our tcx link on the site when ours is one.
func ourTCX(site hookSite) (attach.TCXLink, bool, error) {
	cur, ok, err := attach.PinnedTCX(site.pin)
	if err != nil || !ok || cur.Ifindex != site.ifindex || cur.Hook != site.hook {
		return cur, false, err
	}
	return cur, true, nil
}

// programSite is where d's custom program runs: behind our program for
// d, on the pod's interface where atPod says d is handled there. netns is
// the pod's for a pod-side site, "" for the node's.
func (s *Shaper) programSite(ifc Interface, d rules.Direction, atPod [2]bool) (site hookSite, netns string) {
	if atPod[d] && ifc.Pod.NetnsPath != "" {
		return s.podSite(ifc, d), ifc.Pod.NetnsPath
	}
	return s.hostSite(ifc, d), ""
}

// otherSite is the site d's custom program must not be on (the one
// programSite did not pick); ok false when it cannot be reached (no pod
// end known).
func (s *Shaper) otherSite(ifc Interface, d rules.Direction, atPod [2]bool) (site hookSite, netns string, ok bool) {
	if atPod[d] && ifc.Pod.NetnsPath != "" {
		return s.hostSite(ifc, d), "", true
	}
	if ifc.Pod.NetnsPath == "" || ifc.Pod.IfIndex == 0 {
		return site, "", false
	}
	return s.podSite(ifc, d), ifc.Pod.NetnsPath, true
}

// inNetns runs fn in netns ("" = the caller's, the node's).
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	return podnet.Do(netns, fn)
}

// ApplyPrograms puts the custom programs pol asks for (kubeshaper.io/
// program) on ifc, each right behind kubeshaper's own program for its
// direction (see above), and removes those it no longer asks for. It is a
// separate step from Apply, run after it (Apply decides which directions
// run at the pod): a program that cannot be loaded (missing file, bad
// parameter, verifier rejection) leaves no program on that hook and does
// not touch the built-in rules, which keep working. A program already in
// place under the wanted name (same file content, same parameters) is
// left as it is. Runs in the node netns.
func (s *Shaper) ApplyPrograms(ifc Interface, pol rules.Policy) [2]ProgramStatus {
	var out [2]ProgramStatus
	atPod := s.atPod(ifc)
	for _, d := range rules.Directions {
		site, netns := s.programSite(ifc, d, atPod)
		if other, ons, ok := s.otherSite(ifc, d, atPod); ok {
			if err := inNetns(ons, func() error { return s.removeProgram(other) }); err != nil && !isGone(err) {
				out[d].Err = err
			}
		}
		p := pol[d].Program
		err := inNetns(netns, func() error {
			if p == nil {
				return s.removeProgram(site)
			}
			name, err := datapath.CustomFilterName(s.ProgramDir, *p, d)
			if err != nil {
				return errors.Join(err, s.removeProgram(site))
			}
			out[d].Filter = name
			present, listErr := attach.ListProgramFilters(site.ifindex)
			if listErr == nil && s.programInPlace(site, name, present) {
				return nil
			}
			prog, name, err := s.dp.LoadCustom(s.ProgramDir, *p, d)
			if err != nil {
				return errors.Join(err, s.removeProgram(site))
			}
			defer prog.Close() // the filter or link holds the program
			out[d].Filter = name
			return s.putProgram(site, prog, name)
		})
		out[d].Err = errors.Join(out[d].Err, err)
	}
	return out
}

// ProgramsIntact reports whether ifc carries exactly the custom programs
// named in want (a "" name: none for that direction), each in its place.
// Runs in the node netns.
func (s *Shaper) ProgramsIntact(ifc Interface, want [2]string) bool {
	atPod := s.atPod(ifc)
	for _, d := range rules.Directions {
		if other, ons, ok := s.otherSite(ifc, d, atPod); ok {
			var there bool
			if err := inNetns(ons, func() error { there = s.anyProgram(other); return nil }); err != nil || there {
				return false
			}
		}
		site, netns := s.programSite(ifc, d, atPod)
		ok := false
		err := inNetns(netns, func() error {
			if want[d] == "" {
				ok = !s.anyProgram(site)
				return nil
			}
			present, err := attach.ListProgramFilters(site.ifindex)
			ok = err == nil && s.programInPlace(site, want[d], present)
			return nil
		})
		if err != nil || !ok {
			return false
		}
	}
	return true
}

// HasPrograms reports whether ifc carries a custom program in either form,
// host or pod side (true when unsure, so that the caller's cleanup step
// looks). Runs in the node netns.
func (s *Shaper) HasPrograms(ifc Interface) bool {
	for _, d := range rules.Directions {
		if s.anyProgram(s.hostSite(ifc, d)) {
			return true
		}
		if ifc.Pod.NetnsPath != "" && ifc.Pod.IfIndex != 0 {
			found := true
			_ = podnet.Do(ifc.Pod.NetnsPath, func() error { found = s.anyProgram(s.podSite(ifc, d)); return nil })
			if found {
				return true
			}
		}
	}
	return false
}

// anyProgram reports whether the site has a custom program in either form
// (true when unsure). Runs in the site's netns.
func (s *Shaper) anyProgram(site hookSite) bool {
	fl, err := attach.ListProgramFilters(site.ifindex)
	if err != nil || slices.ContainsFunc(fl, func(f attach.Filter) bool { return f.Hook == site.hook }) {
		return true
	}
	_, linked, err := attach.PinnedTCX(programPin(site))
	return err != nil || linked
}

// programInPlace reports whether the site carries the custom program
// named name right behind ours, in the form ours has, and nothing else of
// the kind.
func (s *Shaper) programInPlace(site hookSite, name string, present []attach.Filter) bool {
	ours, onTCX, err := ourTCX(site)
	if err != nil {
		return false
	}
	pin := programPin(site)
	l, linked, err := attach.PinnedTCX(pin)
	if err != nil {
		return false
	}
	filters := slices.DeleteFunc(slices.Clone(present), func(f attach.Filter) bool { return f.Hook != site.hook })
	if !onTCX {
		return !linked && len(filters) == 1 && filters[0].Name == name
	}
	return len(filters) == 0 && linked && s.progNames.get(pin) == name && attach.Behind(site.ifindex, site.hook, ours.LinkID, l.LinkID)
}

// putProgram puts prog, named name, right behind ours on the site and
// takes off the program's other form.
func (s *Shaper) putProgram(site hookSite, prog *ebpf.Program, name string) error {
	ours, onTCX, err := ourTCX(site)
	if err != nil {
		return err
	}
	pin := programPin(site)
	if !onTCX {
		if err := attach.AttachProgramFilter(site.ifindex, site.hook, prog.FD(), name); err != nil {
			return err
		}
		s.progNames.set(pin, "")
		return attach.DetachTCX(pin)
	}
	if _, err := attach.AttachTCXAfter(site.ifindex, site.hook, prog, pin, ours.LinkID); err != nil {
		return err
	}
	s.progNames.set(pin, name)
	if err := attach.DetachProgramFilter(site.ifindex, site.hook); err != nil && !isGone(err) {
		return err
	}
	return nil
}

// removeProgram takes the site's custom program off, in either form.
func (s *Shaper) removeProgram(site hookSite) error {
	var errs []error
	if err := attach.DetachProgramFilter(site.ifindex, site.hook); err != nil && !isGone(err) {
		errs = append(errs, err)
	}
	pin := programPin(site)
	if err := attach.DetachTCX(pin); err != nil && !isGone(err) {
		errs = append(errs, err)
	}
	s.progNames.set(pin, "")
	return errors.Join(errs...)
}

// followProgram keeps the site's custom program right behind ours where
// ours is a tcx link: moved there from its cls_bpf filter (the loaded
// program and its name kept), or put back behind ours when another
// program got in between or ours was moved back to the head. Nothing to
// do while ours is a cls_bpf filter (slot 2 runs right after slot 1).
func (s *Shaper) followProgram(site hookSite) error {
	ours, onTCX, err := ourTCX(site)
	if err != nil || !onTCX {
		return err
	}
	pin := programPin(site)
	l, linked, err := attach.PinnedTCX(pin)
	if err != nil {
		return err
	}
	var id uint32
	var name string
	switch {
	case linked && attach.Behind(site.ifindex, site.hook, ours.LinkID, l.LinkID):
		return nil
	case linked:
		id, name = l.ProgID, s.progNames.get(pin)
	default:
		fl, err := attach.ListProgramFilters(site.ifindex)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(fl, func(f attach.Filter) bool { return f.Hook == site.hook })
		if i < 0 {
			return nil
		}
		id, name = fl[i].ProgID, fl[i].Name
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return fmt.Errorf("custom program (id %d) on ifindex %d %s: %w", id, site.ifindex, site.hook, err)
	}
	defer prog.Close()
	return s.putProgram(site, prog, name)
}

// ProgramAttachments names, per direction, the custom program of ifc and
// where it runs: "host ingress: tcx link 12 (prog 40), right behind ours"
// or "pod ingress: cls_bpf kubeshaper_prog_… (prog 40, pref 2)"; "" where
// there is none. Runs in the node netns.
func (s *Shaper) ProgramAttachments(ifc Interface) [2]string {
	var out [2]string
	atPod := s.atPod(ifc)
	for _, d := range rules.Directions {
		site, netns := s.programSite(ifc, d, atPod)
		_ = inNetns(netns, func() error { out[d] = s.describeProgram(site); return nil })
	}
	return out
}

func (s *Shaper) describeProgram(site hookSite) string {
	where := "host " + site.hook.String() + ": "
	if site.podSide {
		where = "pod " + site.hook.String() + ": "
	}
	if l, ok, err := attach.PinnedTCX(programPin(site)); err == nil && ok {
		ours, _, _ := ourTCX(site)
		rel := "NOT right behind ours"
		if attach.Behind(site.ifindex, site.hook, ours.LinkID, l.LinkID) {
			rel = "right behind ours"
		}
		return fmt.Sprintf("%stcx link %d (prog %d), %s", where, l.LinkID, l.ProgID, rel)
	}
	fl, _ := attach.ListProgramFilters(site.ifindex)
	for _, f := range fl {
		if f.Hook == site.hook {
			return fmt.Sprintf("%scls_bpf %s (prog %d, pref %d)", where, f.Name, f.ProgID, f.Priority)
		}
	}
	return ""
}
