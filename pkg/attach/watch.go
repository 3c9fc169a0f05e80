package attach

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TCWatch receives the rtnetlink notifications of tc changes (filters,
// qdiscs: RTNLGRP_TC) and link changes (RTNLGRP_LINK) of the network
// namespace it was opened in: how the agent learns within milliseconds that
// another tool deleted our filter or clsact or put a filter before ours.
// tcx attach and detach send no notification (they are BPF links, not tc
// objects): see TCXRevision.
type TCWatch struct {
	c *netlink.Conn
}

// WatchTC opens the subscription in the calling thread's netns; the socket
// stays bound to it.
func WatchTC() (*TCWatch, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_TC | unix.RTMGRP_LINK})
	if err != nil {
		return nil, fmt.Errorf("attach: subscribe to tc and link notifications: %w", err)
	}
	return &TCWatch{c: c}, nil
}

// Next blocks until notifications arrive and returns the ifindexes they
// concern (duplicates possible). An error ends the watch (Close was
// called, or the socket failed: the caller reopens or falls back to
// polling). A receive buffer overrun (ENOBUFS: too many changes at once)
// returns ifindex 0, meaning "something changed, recheck everything".
func (w *TCWatch) Next() ([]int, error) {
	msgs, err := w.c.Receive()
	if err != nil {
		if ne, ok := err.(*netlink.OpError); ok && ne.Err == unix.ENOBUFS {
			return []int{0}, nil
		}
		return nil, err
	}
	out := make([]int, 0, len(msgs))
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.RTM_NEWTFILTER, unix.RTM_DELTFILTER, unix.RTM_NEWQDISC, unix.RTM_DELQDISC,
			unix.RTM_NEWLINK, unix.RTM_DELLINK:
		default:
			continue
		}
		// tcmsg and ifinfomsg both carry the ifindex (s32) at offset 4.
		if len(m.Data) < 8 {
			continue
		}
		out = append(out, int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))))
	}
	return out, nil
}

// Close ends the watch; a blocked Next returns an error.
func (w *TCWatch) Close() error { return w.c.Close() }
