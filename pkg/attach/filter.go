package attach

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	tc "github.com/florianl/go-tc"
	"golang.org/x/sys/unix"
)

// Filter is one of kubeshaper's filters as the kernel reports it.
type Filter struct {
	Ifindex      int
	Hook         Hook
	Name         string // starts with NamePrefix
	ProgID       uint32 // as in `bpftool prog show id N`
	Priority     uint16
	Handle       uint32
	DirectAction bool
}

// AttachFilter puts the program progFD (a SchedCLS program) on the hook
// of the interface as a direct-action cls_bpf filter named name, in our
// fixed slot (FilterPriority, FilterHandle), adding clsact if needed.
//
// Attaching again replaces: the kernel swaps the program of the existing
// filter in place (under RCU, so no packet sees neither program), and
// there is never a second kubeshaper filter on the hook. The request
// carries NLM_F_CREATE without NLM_F_EXCL, which is what `tc filter
// replace` amounts to: for filters the kernel (tc_new_tfilter) changes an
// existing filter unless NLM_F_EXCL is set and does not consult
// NLM_F_REPLACE; go-tc's Filter.Replace sends exactly NLM_F_CREATE.
//
// name must start with NamePrefix, or we could not find the filter again.
// A filter of another tool in our slot is left alone: ErrForeignFilter.
func AttachFilter(ifindex int, hook Hook, progFD int, name string) error {
	return attachAt(FilterPriority, ifindex, hook, progFD, name)
}

// AttachProgramFilter is AttachFilter for the second slot (priority
// ProgramPriority): a custom program, which runs after kubeshaper's own
// when that lets the packet go on (TC_ACT_UNSPEC).
func AttachProgramFilter(ifindex int, hook Hook, progFD int, name string) error {
	return attachAt(ProgramPriority, ifindex, hook, progFD, name)
}

func attachAt(prio uint16, ifindex int, hook Hook, progFD int, name string) error {
	const op = "attach filter"
	if !strings.HasPrefix(name, NamePrefix) {
		return failHook(op, ifindex, hook, fmt.Errorf("filter name %q lacks the prefix %q", name, NamePrefix))
	}
	if progFD < 0 {
		return failHook(op, ifindex, hook, fmt.Errorf("invalid program fd %d", progFD))
	}
	parent, err := hook.parent()
	if err != nil {
		return failHook(op, ifindex, hook, err)
	}

	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	if err := ensureClsact(conn, ifindex); err != nil {
		return err
	}
	existing, err := dumpFilters(conn, ifindex, hook)
	if err != nil {
		return failHook(op, ifindex, hook, err)
	}
	for i := range existing {
		if inSlot(&existing[i], prio) && !hasOurName(&existing[i]) {
			return failHook(op, ifindex, hook, fmt.Errorf("%w (%s)", ErrForeignFilter, describeFilter(&existing[i])))
		}
	}

	fd := uint32(progFD)
	flags := uint32(tc.BpfActDirect)
	obj := filterObject(ifindex, parent, prio)
	obj.BPF = &tc.Bpf{FD: &fd, Name: &name, Flags: &flags}
	if err := conn.Filter().Replace(obj); err != nil {
		return failHook(op, ifindex, hook, fmt.Errorf("%s: %w", name, err))
	}
	return nil
}

// DetachFilter removes our filter from the hook: the filter in our slot,
// and only if its name has our prefix. No such filter (or no such
// interface: a pod's veth vanishes with the pod) is not an error.
//
// If the clsact qdisc is then left without any filter on either hook, it
// is deleted too; a clsact that still holds anything — another tool's
// filter, or ours on the other hook — stays (see removeClsactIfEmpty).
func DetachFilter(ifindex int, hook Hook) error {
	return detachAt(FilterPriority, ifindex, hook)
}

// DetachProgramFilter removes our custom-program filter (the second slot)
// from the hook, if there is one.
func DetachProgramFilter(ifindex int, hook Hook) error {
	return detachAt(ProgramPriority, ifindex, hook)
}

func detachAt(prio uint16, ifindex int, hook Hook) error {
	const op = "detach filter"
	parent, err := hook.parent()
	if err != nil {
		return failHook(op, ifindex, hook, err)
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	existing, err := dumpFilters(conn, ifindex, hook)
	if err != nil {
		return failHook(op, ifindex, hook, err)
	}
	found := false
	for i := range existing {
		found = found || (inSlot(&existing[i], prio) && hasOurName(&existing[i]))
	}
	if !found {
		return nil
	}
	obj := filterObject(ifindex, parent, prio)
	if err := conn.Filter().Delete(obj); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return failHook(op, ifindex, hook, err)
	}
	if err := removeClsactIfEmpty(conn, ifindex); err != nil {
		return fail("clean up clsact", ifindex, err)
	}
	return nil
}

// ListFilters returns our filters on the interface, ingress hook first:
// kubeshaper's own (the first slot), not custom programs.
func ListFilters(ifindex int) ([]Filter, error) {
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return listFilters(conn, ifindex, FilterPriority)
}

// ListProgramFilters returns our custom-program filters (the second slot)
// on the interface, ingress hook first.
func ListProgramFilters(ifindex int) ([]Filter, error) {
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return listFilters(conn, ifindex, ProgramPriority)
}

// ListAllOurs returns our filters on every interface of the netns, keyed
// by ifindex: what a restarted agent compares with the pods it knows, to
// remove what a crash left behind. Only interfaces with a clsact qdisc can
// hold filters, so one qdisc dump finds them all.
func ListAllOurs() (map[int][]Filter, error) {
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	qdiscs, err := conn.Qdisc().Get()
	if err != nil {
		return nil, fmt.Errorf("attach: dump qdiscs: %w", err)
	}
	ours := map[int][]Filter{}
	for _, q := range qdiscs {
		if q.Kind != "clsact" || q.Parent != tc.HandleIngress {
			continue
		}
		filters, err := listFilters(conn, int(q.Ifindex), FilterPriority, ProgramPriority)
		if err != nil {
			return nil, err
		}
		if len(filters) > 0 {
			ours[int(q.Ifindex)] = filters
		}
	}
	return ours, nil
}

func listFilters(conn *tc.Tc, ifindex int, prios ...uint16) ([]Filter, error) {
	var ours []Filter
	for _, hook := range Hooks {
		filters, err := dumpFilters(conn, ifindex, hook)
		if err != nil {
			return nil, failHook("list filters", ifindex, hook, err)
		}
		for i := range filters {
			f := &filters[i]
			if !hasOurName(f) || !slices.ContainsFunc(prios, func(p uint16) bool { return inSlot(f, p) }) {
				continue
			}
			ours = append(ours, Filter{
				Ifindex:      ifindex,
				Hook:         hook,
				Name:         *f.BPF.Name,
				ProgID:       deref(f.BPF.ID),
				Priority:     priority(f),
				Handle:       f.Handle,
				DirectAction: deref(f.BPF.Flags)&tc.BpfActDirect != 0,
			})
		}
	}
	return ours, nil
}

// dumpFilters returns the hook's filters, all chains, all tools. The kernel
// also lists one handle-less entry per priority (the classifier itself);
// those are dropped. A missing interface or clsact yields no filters.
func dumpFilters(conn *tc.Tc, ifindex int, hook Hook) ([]tc.Object, error) {
	parent, err := hook.parent()
	if err != nil {
		return nil, err
	}
	all, err := conn.Filter().Get(&tc.Msg{Family: unix.AF_UNSPEC, Ifindex: uint32(ifindex), Parent: parent})
	if err != nil {
		return nil, fmt.Errorf("dump filters: %w", err)
	}
	filters := all[:0]
	for _, f := range all {
		if f.Handle != 0 {
			filters = append(filters, f)
		}
	}
	return filters, nil
}

// filterObject addresses our slot on a hook: kind, priority, protocol,
// handle, chain 0 — everything the kernel needs to find, change or delete
// exactly that filter.
func filterObject(ifindex int, parent uint32, prio uint16) *tc.Object {
	return &tc.Object{
		Msg: tc.Msg{
			Family:  unix.AF_UNSPEC,
			Ifindex: uint32(ifindex),
			Handle:  FilterHandle,
			Parent:  parent,
			// tcm_info: priority in the upper 16 bits, the protocol
			// (ETH_P_ALL, network byte order) in the lower ones.
			Info: uint32(prio)<<16 | uint32(htons(unix.ETH_P_ALL)),
		},
		Attribute: tc.Attribute{Kind: "bpf"},
	}
}

func inSlot(f *tc.Object, prio uint16) bool {
	return f.Kind == "bpf" && f.Handle == FilterHandle && priority(f) == prio &&
		(f.Chain == nil || *f.Chain == 0)
}

func hasOurName(f *tc.Object) bool {
	return f.BPF != nil && f.BPF.Name != nil && strings.HasPrefix(*f.BPF.Name, NamePrefix)
}

func describeFilter(f *tc.Object) string {
	name := "unnamed"
	if f.BPF != nil && f.BPF.Name != nil {
		name = fmt.Sprintf("named %q", *f.BPF.Name)
	}
	return fmt.Sprintf("%s filter pref %d handle %#x %s", f.Kind, priority(f), f.Handle, name)
}

func priority(f *tc.Object) uint16 { return uint16(f.Info >> 16) }

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func deref(p *uint32) uint32 {
	if p == nil {
		return 0
	}
	return *p
}

// AttachFilterFirst is AttachFilter made to run before every other filter
// of priority FilterPriority: within one priority cls_bpf runs the most
// recently added handle first, so when another tool's filter was added
// there after ours (Cilium's legacy slot, pref 1 handle 1, re-added at each
// endpoint regeneration), ours is deleted and added again. The other
// filter stays. For kernels without tcx; with tcx kubeshaper moves to the
// head of the tcx chain instead (AttachTCXFirst).
func AttachFilterFirst(ifindex int, hook Hook, progFD int, name string) error {
	chain, err := Chain(ifindex, hook)
	if err != nil {
		return err
	}
	for _, e := range chain {
		if e.TCX {
			continue
		}
		if e.Ours && e.Pref == FilterPriority {
			return AttachFilter(ifindex, hook, progFD, name) // already first
		}
		break // another filter runs before ours (or ours is missing)
	}
	if err := detachSlotOnly(ifindex, hook); err != nil {
		return err
	}
	return AttachFilter(ifindex, hook, progFD, name)
}

// detachSlotOnly deletes our filter of the first slot and leaves the
// clsact (with the other tool's filter) as it is.
func detachSlotOnly(ifindex int, hook Hook) error {
	parent, err := hook.parent()
	if err != nil {
		return failHook("detach filter", ifindex, hook, err)
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	existing, err := dumpFilters(conn, ifindex, hook)
	if err != nil {
		return failHook("detach filter", ifindex, hook, err)
	}
	if !slices.ContainsFunc(existing, func(f tc.Object) bool { return inSlot(&f, FilterPriority) && hasOurName(&f) }) {
		return nil
	}
	if err := conn.Filter().Delete(filterObject(ifindex, parent, FilterPriority)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return failHook("detach filter", ifindex, hook, err)
	}
	return nil
}
