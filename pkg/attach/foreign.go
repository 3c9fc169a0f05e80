package attach

import (
	"errors"

	tc "github.com/florianl/go-tc"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// MirredToIFB reports whether a filter on the interface's tc ingress
// (u32 or matchall, any tool's) redirects its packets to an ifb device:
// how the CNI bandwidth plugin shapes what a pod sends (the ifb's tbf).
func MirredToIFB(ifindex int) (bool, error) {
	conn, err := dial()
	if err != nil {
		return false, err
	}
	defer conn.Close()
	filters, err := dumpFilters(conn, ifindex, HookIngress)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			return false, nil
		}
		return false, failHook("list filters", ifindex, HookIngress, err)
	}
	for _, f := range filters {
		var acts *[]*tc.Action
		switch {
		case f.U32 != nil:
			acts = f.U32.Actions
		case f.Matchall != nil:
			acts = f.Matchall.Actions
		}
		if acts == nil {
			continue
		}
		for _, a := range *acts {
			if a == nil || a.Kind != "mirred" || a.Mirred == nil || a.Mirred.Parms == nil {
				continue
			}
			if l, err := netlink.LinkByIndex(int(a.Mirred.Parms.IfIndex)); err == nil && l.Type() == "ifb" {
				return true, nil
			}
		}
	}
	return false, nil
}
