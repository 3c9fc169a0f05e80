package datapath

import "fmt"

// Counters is one CPU's (or, summed, the interface's) counters.
type Counters = shaperKsCounters

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
	if err := d.objs.KsStats.Lookup(i, &c); err != nil {
		return c, false, fmt.Errorf("reading counters for %s: %w", keyString(key), err)
	}
	var per []pcpuCounters
	if err := d.objs.KsPcpu.Lookup(i, &per); err != nil {
		return c, false, fmt.Errorf("reading counters for %s: %w", keyString(key), err)
	}
	c.Packets, c.Bytes = 0, 0
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
