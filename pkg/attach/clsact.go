package attach

import (
	"errors"
	"fmt"

	tc "github.com/florianl/go-tc"
	"github.com/florianl/go-tc/core"
	"golang.org/x/sys/unix"
)

// EnsureClsact adds a clsact qdisc to the interface unless it has one. An
// existing clsact — possibly holding other tools' filters — is reused as
// it is: it is never replaced, which would delete those filters.
func EnsureClsact(ifindex int) error {
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return ensureClsact(conn, ifindex)
}

func ensureClsact(conn *tc.Tc, ifindex int) error {
	for attempt := 0; ; attempt++ {
		q, err := ingressSlot(conn, ifindex)
		if err != nil {
			return fail("look up clsact", ifindex, err)
		}
		if q != nil {
			if err := usableClsact(q); err != nil {
				return fail("reuse clsact", ifindex, err)
			}
			return nil
		}
		// Create|Excl, never Replace: if someone adds a clsact between our
		// dump and this add, we get EEXIST and reuse theirs.
		err = conn.Qdisc().Add(clsactObject(ifindex))
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EEXIST) || attempt > 0 {
			return fail("add clsact", ifindex, err)
		}
	}
}

// usableClsact says whether the qdisc in the ingress slot can carry our
// filters: nil for a clsact with per-device filter blocks.
func usableClsact(q *tc.Object) error {
	if q.Kind != "clsact" {
		return fmt.Errorf("%w (kind %q)", ErrIngressQdisc, q.Kind)
	}
	if (q.IngressBlock != nil && *q.IngressBlock != 0) || (q.EgressBlock != nil && *q.EgressBlock != 0) {
		return ErrSharedBlock
	}
	return nil
}

// ingressSlot returns the qdisc at parent ffff:fff1 (clsact or the legacy
// ingress qdisc, which share it), or nil.
func ingressSlot(_ *tc.Tc, ifindex int) (*tc.Object, error) {
	return getQdisc(ifindex, tc.HandleIngress)
}

func clsactObject(ifindex int) *tc.Object {
	return &tc.Object{
		Msg: tc.Msg{
			Family:  unix.AF_UNSPEC,
			Ifindex: uint32(ifindex),
			Handle:  core.BuildHandle(tc.HandleRoot, 0),
			Parent:  tc.HandleIngress,
		},
		Attribute: tc.Attribute{Kind: "clsact"},
	}
}

// removeClsactIfEmpty deletes the clsact qdisc only when no filter at all
// (any tool's, any chain) is left on either hook. We cannot know who
// created a clsact — the qdisc carries no owner — so emptiness is the only
// safe test: deleting a clsact that still holds a filter would silently
// detach another tool. The one residual risk is a tool that adds clsact
// and then its filter in two steps and loses the race to us; it sees its
// filter add fail and retries.
func removeClsactIfEmpty(conn *tc.Tc, ifindex int) error {
	q, err := ingressSlot(conn, ifindex)
	if err != nil || q == nil || q.Kind != "clsact" {
		return err
	}
	for _, hook := range Hooks {
		filters, err := dumpFilters(conn, ifindex, hook)
		if err != nil {
			return err
		}
		if len(filters) > 0 {
			return nil
		}
	}
	return deleteClsact(conn, ifindex)
}

// deleteClsact deletes the interface's clsact; one already gone is not an
// error (see qdiscGone).
func deleteClsact(conn *tc.Tc, ifindex int) error {
	err := conn.Qdisc().Delete(clsactObject(ifindex))
	if qdiscGone(err, func() bool {
		q, qerr := ingressSlot(conn, ifindex)
		return qerr == nil && (q == nil || q.Kind != "clsact")
	}) {
		return nil
	}
	return fmt.Errorf("delete empty clsact: %w", err)
}

// qdiscGone reports whether a qdisc delete that returned err left the qdisc
// gone. Another process (a second agent, a CNI, an admin) may remove it
// between our look and our delete: the kernel then answers ENOENT when the
// slot never held one, and EINVAL ("invalid handle") when the slot now
// holds another qdisc (the built-in noop of an emptied ingress slot, a
// default root) — told apart from a real EINVAL by looking again (gone).
func qdiscGone(err error, gone func() bool) bool {
	switch {
	case err == nil, errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV):
		return true
	case errors.Is(err, unix.EINVAL):
		return gone()
	}
	return false
}
