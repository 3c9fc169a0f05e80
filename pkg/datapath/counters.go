package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

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

// Counters sums key's per-CPU counters. ok is false when there are none.
func (d *Datapath) Counters(key Key) (c Counters, ok bool, err error) {
	var per []Counters
	err = d.objs.KsStats.Lookup(key, &per)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("reading counters for %s: %w", keyString(key), err)
	}
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
		for i := range p.DropPackets {
			c.DropPackets[i] += p.DropPackets[i]
			c.DropBytes[i] += p.DropBytes[i]
		}
		c.Duplicated += p.Duplicated
		c.Corrupted += p.Corrupted
		c.CorruptSkipped += p.CorruptSkipped
		c.TcpDataBwDrops += p.TcpDataBwDrops
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
