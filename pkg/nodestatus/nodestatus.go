// Package nodestatus is the JSON one agent serves at /status (on its
// metrics listener) and `kubectl kubeshaper` gathers from every agent
// through the API server's pod proxy: each pod the agent applies state to,
// its rules and where each came from, requested against achieved, drops by
// reason. The agent fills it; the plugin only reads it.
package nodestatus

import (
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Path is where the agent serves a Node as JSON.
const Path = "/status"

// Node is one agent's answer.
type Node struct {
	Node string    `json:"node"`
	Time time.Time `json:"time"`
	// WindowSeconds is the agent's --rate-window: what "achieved" spans.
	WindowSeconds float64 `json:"window_seconds"`
	Pods          []Pod   `json:"pods"`
}

// Pod is one pod the agent shapes or counts.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	HostVeth  string `json:"host_veth"`
	Ifindex   int    `json:"ifindex"`
	// Rules is the effective policy in effect (rules.Policy.String; "none":
	// counted only).
	Rules string `json:"rules"`
	// Sources are the objects whose annotations set rules: the Services
	// selecting the pod (by name) and the pod, with what each provides.
	Sources []Source `json:"sources,omitempty"`
	// Invalid are the annotations left out, with the Event text.
	Invalid []Invalid `json:"invalid,omitempty"`
	// Directions: egress (what the pod sends), ingress.
	Directions []Direction `json:"directions"`
	// Enforced is false when a direction's rule is not in force (see
	// Direction.Enforced); absent: unknown.
	Enforced *bool  `json:"enforced,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Source is one object's part of the policy.
type Source struct {
	Kind  string `json:"kind"` // Pod or Service
	Name  string `json:"name"`
	Rules string `json:"rules"` // what its valid annotations ask for
	// Wins lists the rules of the effective policy it provides, e.g.
	// "egress bandwidth" (the pod beats its Services; among Services the
	// first by name wins).
	Wins []string `json:"wins,omitempty"`
}

// Invalid is one annotation that was rejected.
type Invalid struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Key     string `json:"key"`
	Message string `json:"message"`
}

// Direction is what one direction asks for and did.
type Direction struct {
	Direction string `json:"direction"`
	// Rule is the datapath's rule as the node CLI shows it.
	Rule string `json:"rule"`
	// Mode is the bandwidth mode (drop, pace, tbf); "" without a limit.
	Mode string `json:"mode,omitempty"`
	// From maps each kind of rule in this direction (bandwidth, loss, …)
	// to the object providing it: "Pod" or "Service/<name>".
	From      map[string]string `json:"from,omitempty"`
	RateBits  uint64            `json:"rate_bits,omitempty"`
	LossRatio float64           `json:"loss_ratio,omitempty"`
	Packets   uint64            `json:"packets"`
	Bytes     uint64            `json:"bytes"`
	Drops     map[string]Drop   `json:"drops"`
	Achieved  *Achieved         `json:"achieved,omitempty"`
	// Enforced: whether the rule is really in force (shaper.Judge: where
	// kubeshaper's program runs on the hook and, against the agent's
	// previous /status reading at least a second old, whether the pod's
	// interface passed traffic our hook did not see); Reason why not, or
	// what runs ahead of ours. Field names as `kubeshaper status --json`.
	Enforced   *bool  `json:"enforced,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Attachment string `json:"attachment,omitempty"`
	Bypassed   bool   `json:"bypassed,omitempty"`
}

// Drop counts one reason's drops.
type Drop struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Achieved is what passed over the agent's sliding window.
type Achieved struct {
	WindowSeconds float64  `json:"window_seconds"`
	Packets       uint64   `json:"packets"`
	RateBits      float64  `json:"rate_bits"`
	LossRatio     *float64 `json:"loss_ratio,omitempty"`
}

// Kinds lists the kinds of rule one direction has, in rules.String order.
func Kinds(dp rules.DirectionPolicy) []string {
	var out []string
	if dp.Bandwidth != nil {
		out = append(out, "bandwidth")
	}
	if dp.Loss != nil {
		out = append(out, "loss")
	}
	if dp.Delay != nil {
		out = append(out, "delay")
	}
	if dp.Program != nil {
		out = append(out, "program")
	}
	if dp.Duplicate != nil {
		out = append(out, "duplicate")
	}
	if dp.Corrupt != nil {
		out = append(out, "corrupt")
	}
	return out
}

// SourcePolicy is one object's valid rules, in rules.Merge's order.
type SourcePolicy struct {
	Kind, Name string
	Policy     rules.Policy
}

// Origins says which object provides each rule of the effective policy,
// by rules.Merge's precedence: the pod's own rule of a kind and direction
// wins, else the first Service (srcs as Merge takes them: Services sorted
// by name, then the pod) that has one. effective is the policy in force
// (time limits may have ended some sources' rules): kinds it lacks are
// attributed to nobody.
func Origins(effective rules.Policy, srcs []SourcePolicy) (from [2]map[string]string, wins map[int][]string) {
	wins = map[int][]string{}
	pod := -1
	for i, s := range srcs {
		if s.Kind == "Pod" {
			pod = i
		}
	}
	for _, d := range rules.Directions {
		for _, k := range Kinds(effective[d]) {
			who := -1
			if pod >= 0 && has(srcs[pod].Policy[d], k) {
				who = pod
			} else {
				for i, s := range srcs {
					if s.Kind != "Pod" && has(s.Policy[d], k) {
						who = i
						break
					}
				}
			}
			if who < 0 {
				continue
			}
			if from[d] == nil {
				from[d] = map[string]string{}
			}
			name := "Pod"
			if srcs[who].Kind != "Pod" {
				name = srcs[who].Kind + "/" + srcs[who].Name
			}
			from[d][k] = name
			wins[who] = append(wins[who], d.String()+" "+k)
		}
	}
	return from, wins
}

func has(dp rules.DirectionPolicy, kind string) bool {
	for _, k := range Kinds(dp) {
		if k == kind {
			return true
		}
	}
	return false
}
