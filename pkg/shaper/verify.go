package shaper

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Having attached proves nothing: another tool's program may end the hook
// before ours runs, or deliveries may skip the hook altogether
// (bpf_redirect_peer into the pod). What does prove it is traffic: the
// pod's own interface counts every packet the pod sends and receives
// (since 6.7 also those a peer redirect delivers), and our hook counts
// every packet it sees. If the interface's counters move while ours stand
// still, the rule is bypassed, whatever `tc filter show` says.

// BypassMinPackets is how many packets the pod's interface must pass in a
// window before a judgement from counters is made: fewer are not enough
// to tell a bypass from an idle pod.
const BypassMinPackets = 32

// Enforcement says whether one direction of a pod is really under
// kubeshaper's rule. Its JSON field names are kept stable: `kubeshaper
// status --json`, the agent's /status and the kubectl plugin read them.
type Enforcement struct {
	Enforced bool   `json:"enforced"`
	Reason   string `json:"reason,omitempty"`
	// Attachment names where ours runs: "host ingress: tcx link 12 (prog
	// 40)", "pod egress: cls_bpf kubeshaper_pod_edt (…)".
	Attachment string `json:"attachment,omitempty"`
	// PodSide: the direction runs on the pod's own interface.
	PodSide bool `json:"pod_side,omitempty"`
	// Foreign names the other program held responsible, if any (name, id,
	// hook).
	Foreign string `json:"foreign,omitempty"`
	// Bypassed: counters showed traffic our hook did not see.
	Bypassed bool `json:"bypassed,omitempty"`
}

// Traffic is one reading of a pod's counters: ours (packets our hook saw,
// a GSO skb counting its segments) and the interface's (packets, a GSO
// skb counting one), per direction.
type Traffic struct {
	Ours, Iface [2]uint64
	// IfaceOK: the interface's counters could be read.
	IfaceOK bool
}

// ReadTraffic reads ifc's counters: the pod interface's when its netns is
// known (every delivery into the pod crosses it), else the host veth's.
// Runs in the node netns.
func (s *Shaper) ReadTraffic(ifc Interface) Traffic {
	var t Traffic
	for _, d := range rules.Directions {
		if c, ok, err := s.dp.Counters(datapath.KeyOf(ifc.Index, d)); err == nil && ok {
			t.Ours[d] = c.Packets
		}
	}
	read := func(idx int, podEnd bool) error {
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return err
		}
		st := l.Attrs().Statistics
		if st == nil {
			return fmt.Errorf("no statistics for ifindex %d", idx)
		}
		// The pod's interface sends what the pod sends; the host veth
		// receives it.
		if podEnd {
			t.Iface[rules.Egress], t.Iface[rules.Ingress] = st.TxPackets, st.RxPackets
		} else {
			t.Iface[rules.Egress], t.Iface[rules.Ingress] = st.RxPackets, st.TxPackets
		}
		return nil
	}
	if ifc.Pod.NetnsPath != "" {
		t.IfaceOK = podnet.Do(ifc.Pod.NetnsPath, func() error {
			if err := read(ifc.Pod.IfIndex, true); err != nil {
				return err
			}
			// Before 6.7 a peer-redirected delivery moves no counter of
			// the pod's interface; the pod's IP stack counts it anyway.
			in, out := ipPackets()
			t.Iface[rules.Ingress] = max(t.Iface[rules.Ingress], in)
			t.Iface[rules.Egress] = max(t.Iface[rules.Egress], out)
			return nil
		}) == nil
	} else {
		t.IfaceOK = read(ifc.Index, false) == nil
	}
	return t
}

// Judge says, per direction, whether the rule is in force: from where
// our programs are (pl, from Placements) and, when before and after span
// a window with enough traffic, from the counters.
func Judge(pl [2]Placement, before, after *Traffic) [2]Enforcement {
	var out [2]Enforcement
	for _, d := range rules.Directions {
		p := pl[d]
		e := Enforcement{Attachment: p.String(), PodSide: p.PodSide}
		where := "the host veth's tc " + p.Hook
		if p.PodSide {
			where = "the pod interface's tc " + p.Hook
		}
		if p.Foreign() {
			e.Foreign = fmt.Sprintf("%s on %s", p.AheadString(), where)
		}
		var iface, ours uint64
		measured := false
		if before != nil && after != nil && before.IfaceOK && after.IfaceOK {
			iface = after.Iface[d] - before.Iface[d]
			ours = after.Ours[d] - before.Ours[d]
			measured = iface >= BypassMinPackets
		}
		switch {
		case p.Err != nil:
			e.Reason = fmt.Sprintf("cannot read %s: %v", where, p.Err)
		case p.Attachment == "":
			e.Reason = fmt.Sprintf("kubeshaper's program is not attached on %s", where)
			if e.Foreign != "" {
				e.Reason += " (there: " + p.AheadString() + ")"
			}
		case measured && 2*ours < iface:
			e.Bypassed = true
			e.Reason = fmt.Sprintf("bypassed: the pod's interface passed %d packets, kubeshaper's hook on %s saw %d", iface, where, ours)
			if e.Foreign != "" {
				e.Reason += "; running before it: " + p.AheadString()
			} else if !p.PodSide {
				e.Reason += "; deliveries skip the host veth (bpf_redirect_peer, a program ending the hook elsewhere)"
			}
		case p.Foreign() && !measured:
			e.Reason = fmt.Sprintf("not verified: %s runs before kubeshaper's program on %s and may end the hook", p.AheadString(), where)
		default:
			e.Enforced = true
			if p.Foreign() {
				e.Reason = fmt.Sprintf("%s runs first on %s but passes the traffic on", p.AheadString(), where)
			}
		}
		out[d] = e
	}
	return out
}

// ipPackets reads the calling thread's netns IP counters (IPv4 + IPv6):
// packets received (InReceives) and sent (OutRequests).
func ipPackets() (in, out uint64) {
	if b, err := os.ReadFile("/proc/thread-self/net/snmp"); err == nil {
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Ip:" {
				continue
			}
			if names == nil {
				names = f[1:]
				continue
			}
			for i, n := range names {
				if i+1 >= len(f) {
					break
				}
				v, _ := strconv.ParseUint(f[i+1], 10, 64)
				switch n {
				case "InReceives":
					in += v
				case "OutRequests":
					out += v
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/thread-self/net/snmp6"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			v, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "Ip6InReceives":
				in += v
			case "Ip6OutRequests":
				out += v
			}
		}
	}
	return in, out
}
