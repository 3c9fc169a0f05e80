package datapath

import (
	"math"
	"time"
)

// Achieved is what one {interface, direction} did between two readings of
// its counters: the rate that passed kubeshaper's hook and the share of
// packets the loss rule dropped (read-side arithmetic only).
type Achieved struct {
	Span time.Duration
	// Packets and Bytes seen in the span, dropped ones included.
	Packets, Bytes uint64
	// RateBits is the wire rate that passed (seen minus every kubeshaper
	// drop), in bits per second.
	RateBits float64
	// LossRatio is injected-loss drops / packets seen; NaN without packets.
	LossRatio float64
	// DropRatio is drops for any reason / packets seen; NaN without packets.
	DropRatio float64
	// RetransRatio is bandwidth drops of TCP segments carrying data (the
	// retransmissions the policer caused) / packets seen; NaN without
	// packets.
	RetransRatio float64
}

// AchievedBetween compares two readings of the same key taken span apart.
// ok is false when the counters went backwards (the entry was recreated in
// between) or the span is not positive.
func AchievedBetween(prev, cur Counters, span time.Duration) (a Achieved, ok bool) {
	if span <= 0 || cur.Packets < prev.Packets || cur.Bytes < prev.Bytes {
		return a, false
	}
	a.Span = span
	a.Packets = cur.Packets - prev.Packets
	a.Bytes = cur.Bytes - prev.Bytes
	pd, bd := cur.Dropped()
	ppd, pbd := prev.Dropped()
	if pd < ppd || bd < pbd {
		return a, false
	}
	dropPackets, dropBytes := pd-ppd, bd-pbd
	passed := float64(a.Bytes) - float64(dropBytes)
	if passed < 0 {
		passed = 0
	}
	a.RateBits = passed * 8 / span.Seconds()
	loss := cur.DropPackets[ReasonLoss] - prev.DropPackets[ReasonLoss]
	retrans := cur.TcpDataBwDrops - min(prev.TcpDataBwDrops, cur.TcpDataBwDrops)
	if a.Packets == 0 {
		a.LossRatio, a.DropRatio, a.RetransRatio = math.NaN(), math.NaN(), math.NaN()
	} else {
		a.LossRatio = float64(loss) / float64(a.Packets)
		a.DropRatio = float64(dropPackets) / float64(a.Packets)
		a.RetransRatio = float64(retrans) / float64(a.Packets)
	}
	return a, true
}
