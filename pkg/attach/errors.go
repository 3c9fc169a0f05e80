package attach

import (
	"errors"
	"fmt"
	"net"
)

var (
	// ErrFQUnavailable means the kernel has no sch_fq qdisc (not built, no
	// module): EDT pacing and delay cannot work on this node.
	ErrFQUnavailable = errors.New("sch_fq qdisc unavailable in this kernel (EDT pacing needs it)")

	// ErrForeignFilter means a filter without our name prefix occupies our
	// priority and handle; kubeshaper does not replace it.
	ErrForeignFilter = errors.New("another tool's filter occupies kubeshaper's priority and handle")

	// ErrForeignQdisc means the root qdisc was installed by someone else
	// (a handle other than QdiscHandle and the kernel default 0).
	ErrForeignQdisc = errors.New("root qdisc belongs to another tool")

	// ErrSharedBlock means the clsact qdisc uses a shared filter block: a
	// filter added there would apply to every interface bound to it.
	ErrSharedBlock = errors.New("clsact qdisc uses a shared filter block")

	// ErrIngressQdisc means a legacy ingress qdisc holds the slot clsact
	// needs; replacing it would drop its owner's filters.
	ErrIngressQdisc = errors.New("a legacy ingress qdisc is installed where clsact is needed")
)

// describe names an interface for error messages: "veth1 (ifindex 7)", or
// "ifindex 7" when the name cannot be resolved (the link is gone).
func describe(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return fmt.Sprintf("%s (ifindex %d)", ifi.Name, ifindex)
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// fail wraps err with the operation and the interface it failed on.
func fail(op string, ifindex int, err error) error {
	return fmt.Errorf("attach: %s on %s: %w", op, describe(ifindex), err)
}

// failHook is fail for an operation on one hook.
func failHook(op string, ifindex int, hook Hook, err error) error {
	return fmt.Errorf("attach: %s on %s tc %s: %w", op, describe(ifindex), hook, err)
}
