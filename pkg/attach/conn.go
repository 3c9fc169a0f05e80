package attach

import (
	"fmt"

	tc "github.com/florianl/go-tc"
	"github.com/mdlayher/netlink"
)

// dial opens an rtnetlink socket in the calling thread's netns. One per
// call: sockets are bound to the netns they were created in, and callers
// switch namespaces between calls.
func dial() (*tc.Tc, error) {
	conn, err := tc.Open(&tc.Config{})
	if err != nil {
		return nil, fmt.Errorf("attach: open rtnetlink: %w", err)
	}
	// Extended acks put the kernel's reason ("Specified qdisc kind is
	// unknown") into our errors; without them only the errno remains.
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	return conn, nil
}
