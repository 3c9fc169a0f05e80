package attach

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	tc "github.com/florianl/go-tc"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// getQdisc asks the kernel for the one qdisc at parent (TC_H_ROOT or
// TC_H_INGRESS) of ifindex, with a plain RTM_GETQDISC request. A dump, as
// go-tc's Qdisc().Get() sends, returns every qdisc of every interface in
// the netns and costs O(pods) per call, O(pods²) per node reconcile; the
// kernel does not filter qdisc dumps by interface. Returns nil, nil when
// the slot is empty (or holds the placeholder noop qdisc).
func getQdisc(ifindex int, parent uint32) (*tc.Object, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	defer c.Close()
	// Never hang a reconcile on a reply that does not come.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := make([]byte, 20) // struct tcmsg
	req[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(req[4:], uint32(ifindex))
	binary.NativeEndian.PutUint32(req[12:], parent)
	msgs, err := c.Execute(netlink.Message{
		// Echo: the kernel answers a non-dump get through its qdisc
		// notification path, which unicasts to the asker only when echo
		// is requested (otherwise it reaches multicast listeners alone).
		// Acknowledge: for a built-in qdisc (noqueue at a veth's root, noop
		// in an emptied ingress slot) that path sends nothing at all, not
		// even an error; only the ack tells us so instead of the deadline.
		Header: netlink.Header{Type: unix.RTM_GETQDISC, Flags: netlink.Request | netlink.Echo | netlink.Acknowledge},
		Data:   req,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		return nil, nil // an empty slot, or the interface is gone
	}
	if errors.Is(err, unix.EINVAL) {
		// The kernel will not describe its built-in qdiscs (noqueue at a
		// veth's root, noop in an emptied ingress slot): a default.
		if parent == tc.HandleRoot {
			return &tc.Object{Msg: tc.Msg{Ifindex: uint32(ifindex), Parent: parent}, Attribute: tc.Attribute{Kind: "noqueue"}}, nil
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get qdisc %x: %w", parent, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWQDISC || len(m.Data) < 20 {
			continue // the ack
		}
		q := &tc.Object{Msg: tc.Msg{
			Family:  uint32(m.Data[0]),
			Ifindex: binary.NativeEndian.Uint32(m.Data[4:]),
			Handle:  binary.NativeEndian.Uint32(m.Data[8:]),
			Parent:  binary.NativeEndian.Uint32(m.Data[12:]),
			Info:    binary.NativeEndian.Uint32(m.Data[16:]),
		}}
		ad, err := netlink.NewAttributeDecoder(m.Data[20:])
		if err != nil {
			return nil, fmt.Errorf("decode qdisc: %w", err)
		}
		for ad.Next() {
			switch ad.Type() {
			case unix.TCA_KIND:
				q.Kind = ad.String()
			case unix.TCA_INGRESS_BLOCK:
				v := ad.Uint32()
				q.IngressBlock = &v
			case unix.TCA_EGRESS_BLOCK:
				v := ad.Uint32()
				q.EgressBlock = &v
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("decode qdisc: %w", err)
		}
		if q.Kind == "noop" {
			return nil, nil // an ingress queue whose clsact was removed
		}
		return q, nil
	}
	// Only the ack: a built-in qdisc the kernel does not describe.
	if parent == tc.HandleRoot {
		return &tc.Object{Msg: tc.Msg{Ifindex: uint32(ifindex), Parent: parent}, Attribute: tc.Attribute{Kind: "noqueue"}}, nil
	}
	return nil, nil
}
