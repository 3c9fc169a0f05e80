package datapath

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// FlowKey and FlowStats mirror the C structs of the ks_flows map.
type (
	FlowKey   = shaperKsFlowKey
	FlowStats = shaperKsFlow
)

// Flow is one per-flow record.
type Flow struct {
	Key   FlowKey
	Stats FlowStats
}

// EnableFlows makes the rule keep per-flow records.
func (c *Config) EnableFlows() { c.Flags |= uint32(shaperKsFlagsKS_F_FLOWS) }

// FlowsEnabled reports whether the rule keeps per-flow records.
func (c Config) FlowsEnabled() bool { return c.Flags&uint32(shaperKsFlagsKS_F_FLOWS) != 0 }

// Src, Dst are the flow's addresses.
func (k FlowKey) Src() net.IP { return addr(k.Family, k.Saddr) }
func (k FlowKey) Dst() net.IP { return addr(k.Family, k.Daddr) }

// SrcPort, DstPort are the ports in host order (0 for protocols without).
func (k FlowKey) SrcPort() uint16 { return swap16(k.Sport) }
func (k FlowKey) DstPort() uint16 { return swap16(k.Dport) }

// Direction is the pod's direction the flow was seen in.
func (k FlowKey) Direction() rules.Direction { return rules.Direction(k.Dir) }

// ProtoName is tcp, udp, icmp, icmpv6 or the protocol number.
func (k FlowKey) ProtoName() string {
	switch k.Proto {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return fmt.Sprintf("proto-%d", k.Proto)
}

func addr(family uint8, b [16]uint8) net.IP {
	if family == 4 {
		return net.IPv4(b[0], b[1], b[2], b[3]).To4()
	}
	ip := make(net.IP, 16)
	copy(ip, b[:])
	return ip
}

// swap16 turns a big-endian port read as a little-endian uint16 around.
func swap16(v uint16) uint16 { return v>>8 | v<<8 }

// Flows lists every flow record (all interfaces).
func (d *Datapath) Flows() ([]Flow, error) {
	var out []Flow
	var k FlowKey
	var v FlowStats
	it := d.objs.KsFlows.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Flow{Key: k, Stats: v})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("listing flows: %w", err)
	}
	return out, nil
}

// ExpireFlows removes and returns the records of flows idle for longer than
// idle, and every record of interfaces in gone (their pod is gone): the
// export path. The LRU map also evicts by itself when full.
func (d *Datapath) ExpireFlows(idle time.Duration, gone map[uint32]bool) ([]Flow, error) {
	all, err := d.Flows()
	if err != nil {
		return nil, err
	}
	wall, err := d.FlowClock() // one clock reading for the whole pass
	if err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-idle)
	var out []Flow
	for _, f := range all {
		if !gone[f.Key.Ifindex] && wall(f.Stats.LastJiffies).After(cutoff) {
			continue
		}
		if err := d.objs.KsFlows.Delete(f.Key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, fmt.Errorf("expiring a flow: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}

// Seen returns when the flow was first and last seen, in wall-clock time
// (to the kernel tick: flows are stamped in jiffies).
// Converting many records, use FlowClock once instead.
func (d *Datapath) Seen(s FlowStats) (first, last time.Time, err error) {
	wall, err := d.FlowClock()
	if err != nil {
		return first, last, err
	}
	return wall(s.FirstJiffies), wall(s.LastJiffies), nil
}

// ForgetFlows deletes every flow record of ifindex (its pod is gone or its
// rules were cleared).
func (d *Datapath) ForgetFlows(ifindex int) error {
	var k FlowKey
	var doomed []FlowKey
	var v FlowStats
	it := d.objs.KsFlows.Iterate()
	for it.Next(&k, &v) {
		if k.Ifindex == uint32(ifindex) {
			doomed = append(doomed, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing flows: %w", err)
	}
	for _, k := range doomed {
		if err := d.objs.KsFlows.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting a flow of ifindex %d: %w", ifindex, err)
		}
	}
	return nil
}
