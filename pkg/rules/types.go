package rules

import "time"

// Direction is named from the pod's point of view.
type Direction uint8

const (
	// Egress is traffic the pod sends (host veth tc ingress).
	Egress Direction = 0
	// Ingress is traffic the pod receives (host veth tc egress).
	Ingress Direction = 1
)

// Directions lists both directions in map-key order.
var Directions = [2]Direction{Egress, Ingress}

func (d Direction) String() string {
	if d == Ingress {
		return "ingress"
	}
	return "egress"
}

// BandwidthMode selects how a rate limit is enforced.
type BandwidthMode string

const (
	// ModeDrop is the BPF token-bucket policer (default; needs no qdisc).
	ModeDrop BandwidthMode = "drop"
	// ModePace is EDT pacing: skb->tstamp plus an fq qdisc.
	ModePace BandwidthMode = "pace"
	// ModeTBF is the kernel tbf qdisc driven by kubeshaper (BPF still counts).
	ModeTBF BandwidthMode = "tbf"
)

// Bandwidth is a rate limit for one direction.
type Bandwidth struct {
	// RateBitsPerSec counts L2 (wire) bits per second, decimal units.
	RateBitsPerSec uint64
	// BurstBytes is the bucket size; 0 means "derive from the rate".
	BurstBytes uint64
	Mode       BandwidthMode
	// Target limits the rule to some packets (zero: all). Not with tbf.
	Target Target
	// NoSocketPacing (pacing=off) keeps a drop-mode rule from pacing the
	// pod's TCP sockets (pkg/sockpace): the policer alone enforces it.
	NoSocketPacing bool
}

// LossKind is the random distribution of injected loss.
type LossKind string

const (
	LossUniform     LossKind = "uniform"
	LossExponential LossKind = "exponential"
	// LossGilbert is the Gilbert-Elliott burst loss model, with netem's
	// gemodel semantics.
	LossGilbert LossKind = "gilbert"
)

// Loss is random packet loss for one direction.
type Loss struct {
	Kind LossKind
	// Percent is the uniform drop probability in percent, [0,100].
	Percent float64
	// Threshold is the exponential threshold of the ELTE prototype's loss model, t in [0,1000]:
	// P(drop) = e^(-t/100).
	Threshold uint32
	// Gilbert holds the Gilbert-Elliott parameters (Kind LossGilbert).
	Gilbert Gilbert
	// Target limits the rule to some packets (zero: all).
	Target Target
}

// Gilbert is a two-state Markov loss model, as netem's gemodel: every
// packet finds the link good or bad, is delivered with probability K
// (good) or H (bad), and moves the state on: good to bad with probability
// P, bad to good with R. All in percent, [0,100].
type Gilbert struct {
	P, R, H, K float64
}

// Duplicate sends a copy of some packets (netem's duplicate).
type Duplicate struct {
	// Percent is the probability a packet is duplicated, (0,100].
	Percent float64
	Target  Target
}

// Corrupt flips one random bit in the payload of some packets.
type Corrupt struct {
	// Percent is the probability a packet is corrupted, (0,100].
	Percent float64
	Target  Target
}

// Delay is added latency (EDT; needs fq on the hook's device).
type Delay struct {
	Delay  time.Duration
	Jitter time.Duration
	// Target limits the rule to some packets (zero: all).
	Target Target
}

// Program is a custom program from the admin's program directory.
type Program struct {
	Name string
	// Params are the program's volatile const globals, NAME=value, in the
	// order given.
	Params []Param
}

// Param is one NAME=value setting of a custom program.
type Param struct {
	Name  string
	Value string
}

// DirectionPolicy is everything asked for one direction. A nil field means
// "no rule of that kind".
type DirectionPolicy struct {
	Bandwidth *Bandwidth
	Loss      *Loss
	Delay     *Delay
	Program   *Program
	Duplicate *Duplicate
	Corrupt   *Corrupt
}

// Policy is the effective rule set of one pod, indexed by Direction.
type Policy [2]DirectionPolicy
