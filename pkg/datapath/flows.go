package datapath

import (
	"bytes"
	"encoding/binary"
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

	set, way uint32 // where ks_flows holds it, for forgetting it
}

// EnableFlows makes the rule keep per-flow records.
func (c *Config) EnableFlows() { c.flags |= fFlows }

// FlowsEnabled reports whether the rule keeps per-flow records.
func (c Config) FlowsEnabled() bool { return c.flags&fFlows != 0 }

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
	var set uint32
	var v flowSet
	for set = 0; set < d.objs.KsFlows.MaxEntries(); set++ {
		// Under the set's lock: never a way half rewritten by a claim.
		if err := d.objs.KsFlows.LookupWithFlags(set, &v, ebpf.LookupLock); err != nil {
			return nil, fmt.Errorf("listing flows: set %d: %w", set, err)
		}
		out = v.appendFlows(out, set)
	}
	return out, nil
}

// flowSet is one set of ks_flows (bpf/lib/flows.h).
type flowSet = shaperKsFlowSet

// appendFlows appends the set's records (the ways in use) to out.
func (v *flowSet) appendFlows(out []Flow, set uint32) []Flow {
	for w := range v.Ways {
		if v.Ways[w].Key.Family != 0 {
			out = append(out, Flow{Key: v.Ways[w].Key, Stats: v.Ways[w].Stats, set: set, way: uint32(w)})
		}
	}
	return out
}

// ExpireFlows removes and returns the records of flows idle for longer than
// idle, and every record of interfaces in gone (their pod is gone): the
// export path. A full set of the table evicts its least recently seen
// flow by itself.
func (d *Datapath) ExpireFlows(idle time.Duration, gone map[uint32]bool) ([]Flow, error) {
	all, err := d.FlowsBatch()
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
		if err := d.forgetFlow(f); err != nil {
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
	all, err := d.FlowsBatch()
	if err != nil {
		return err
	}
	for _, f := range all {
		if f.Key.Ifindex != uint32(ifindex) {
			continue
		}
		if err := d.forgetFlow(f); err != nil {
			return fmt.Errorf("deleting a flow of ifindex %d: %w", ifindex, err)
		}
	}
	return nil
}

// forgetReq is struct ks_flow_forget_req.
type forgetReq struct {
	Set, Way uint32
	Key      FlowKey
}

// forgetFlow removes f's record through ks_flow_forget, which checks under
// the set's lock that the way still holds f's flow (a claim may have
// given it to another since f was read): a set is never rewritten whole,
// which would undo the counts its other flows got meanwhile.
func (d *Datapath) forgetFlow(f Flow) error {
	prog, err := d.flowForgetProg()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, forgetReq{Set: f.set, Way: f.way, Key: f.Key}); err != nil {
		return err
	}
	// BPF_PROG_TEST_RUN wants at least an Ethernet header's worth.
	data := append(buf.Bytes(), make([]byte, 64)...)
	ret, err := prog.Run(&ebpf.RunOptions{Data: data})
	if err != nil {
		return fmt.Errorf("running ks_flow_forget: %w", err)
	}
	if ret == 2 {
		return fmt.Errorf("ks_flow_forget refused set %d way %d", f.set, f.way)
	}
	return nil // 0: the way went to another flow already
}

// flowForgetProg is the loaded ks_flow_forget; a datapath opened from
// pins only (OpenPinned) loads it on first use.
func (d *Datapath) flowForgetProg() (*ebpf.Program, error) {
	if d.objs.KsFlowForget != nil {
		return d.objs.KsFlowForget, nil
	}
	spec, err := loadShaper()
	if err != nil {
		return nil, fmt.Errorf("reading kubeshaper's BPF object: %w", err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"ks_flow_forget"`
	}
	repl := map[string]*ebpf.Map{shaperMapKsFlows: d.objs.KsFlows}
	fitReplacements(spec, repl)
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return nil, fmt.Errorf("loading ks_flow_forget: %w", err)
	}
	d.objs.KsFlowForget = objs.Prog
	return objs.Prog, nil
}
