package datapath

import "fmt"

// Counters are an {interface, direction}'s counters: packets and wire
// bytes seen (every CPU's, summed), drops by reason, and what the
// impairments did. Read from the ks_stats value (struct ks_counters).
type Counters struct {
	Packets, Bytes uint64
	// DropPackets and DropBytes are indexed by reason (ReasonBandwidth, …).
	DropPackets, DropBytes [reasonSlots]uint64
	Duplicated, Corrupted  uint64
	// CorruptSkipped counts packets chosen for corruption that had no
	// payload to corrupt.
	CorruptSkipped uint64
	// TcpDataBwDrops counts bandwidth drops of TCP segments carrying data.
	TcpDataBwDrops uint64
}

// reasonSlots is KS_REASON_MAX of bpf/shaper.h, read from the generated
// struct so that it cannot drift.
const reasonSlots = len(shaperKsCounters{}.DropPackets)

// Drop reasons, indexes into Counters.DropPackets/DropBytes.
const (
	ReasonBandwidth = int(shaperKsReasonKS_REASON_BANDWIDTH)
	ReasonLoss      = int(shaperKsReasonKS_REASON_LOSS)
	ReasonHorizon   = int(shaperKsReasonKS_REASON_HORIZON)
	ReasonProgram   = int(shaperKsReasonKS_REASON_PROGRAM)
)

// ReasonNames maps a reason index to its metric label.
var ReasonNames = map[int]string{
	ReasonBandwidth: "bandwidth",
	ReasonLoss:      "loss",
	ReasonHorizon:   "horizon",
	ReasonProgram:   "program",
}

// pcpuCounters is one CPU's share of the per-packet counters.
type pcpuCounters = shaperKsPcpuCounters

// Counters sums key's counters: the shared ones and every CPU's packets
// and bytes. ok is false when the interface has no entries.
func (d *Datapath) Counters(key Key) (c Counters, ok bool, err error) {
	i, ok, err := d.indexOf(key)
	if err != nil || !ok {
		return c, false, err
	}
	var raw shaperKsCounters
	if err := d.objs.KsStats.Lookup(i, &raw); err != nil {
		return c, false, fmt.Errorf("reading counters for %s: %w", keyString(key), err)
	}
	c = Counters{
		DropPackets: raw.DropPackets, DropBytes: raw.DropBytes,
		Duplicated: raw.Duplicated, Corrupted: raw.Corrupted,
		CorruptSkipped: raw.CorruptSkipped, TcpDataBwDrops: raw.TcpDataBwDrops,
	}
	var per []pcpuCounters
	if err := d.objs.KsPcpu.Lookup(i, &per); err != nil {
		return c, false, fmt.Errorf("reading counters for %s: %w", keyString(key), err)
	}
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
	}
	return c, true, nil
}

// Dropped is the total of packets dropped for any reason.
func (c Counters) Dropped() (packets, bytes uint64) {
	for i := range c.DropPackets {
		packets += c.DropPackets[i]
		bytes += c.DropBytes[i]
	}
	return packets, bytes
}
