// Package flowexport turns the datapath's per-flow records into JSON
// objects (one per flow) for `kubeshaper flows --json` and for the agent's
// JSON-lines export of flows as they end: idle, evicted from the bounded
// map, or gone with their pod. Records are read from the map in bulk every
// few seconds; nothing is sent to user space per packet.
package flowexport

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
)

// Record is one flow as seen at one pod's host veth, in one direction.
type Record struct {
	// Time and End are set by the agent's export only: when the record was
	// exported and why (see the End* constants).
	Time string `json:"time,omitempty"`
	End  string `json:"end,omitempty"`

	Namespace    string `json:"namespace,omitempty"`
	Pod          string `json:"pod,omitempty"`
	Workload     string `json:"workload,omitempty"`
	WorkloadKind string `json:"workload_kind,omitempty"`
	HostVeth     string `json:"host_veth,omitempty"`
	Ifindex      uint32 `json:"ifindex"`

	Direction string `json:"direction"` // the pod's: egress = it sent
	Proto     string `json:"proto"`     // tcp, udp, icmp, icmpv6, proto-N
	Family    int    `json:"family"`    // 4 or 6
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	SrcPort   uint16 `json:"sport"`
	DstPort   uint16 `json:"dport"`

	Packets uint64 `json:"packets"` // wire packets (GSO segments)
	Bytes   uint64 `json:"bytes"`   // wire (L2) bytes
	Drops   uint64 `json:"drops"`   // packets kubeshaper dropped
	// TCPFlags are the flags seen, as letters (FSRPAUEC); TCPFlagBits the
	// same as the OR of their bits.
	TCPFlags    string `json:"tcp_flags,omitempty"`
	TCPFlagBits uint32 `json:"tcp_flag_bits,omitempty"`

	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Why a flow was exported.
const (
	// EndIdle: no packet for --flow-idle; the record was removed from the
	// map, so its counts are final.
	EndIdle = "idle"
	// EndPodGone: the pod's interface is no longer applied; final counts.
	EndPodGone = "pod_gone"
	// EndVanished: the record left the map between two reads (a full set
	// of the flow table evicted it, or its pod's state was cleared first). Its counts are
	// those of the previous read, up to one export interval old.
	EndVanished = "vanished"
	// EndShutdown: the agent exported and removed every record on exit.
	EndShutdown = "shutdown"
)

// NewRecord renders a flow; seen converts its jiffies to wall time.
func NewRecord(f datapath.Flow, seen func(jiffies uint64) time.Time) Record {
	k := f.Key
	r := Record{
		Ifindex:   k.Ifindex,
		Direction: k.Direction().String(),
		Proto:     k.ProtoName(),
		Family:    int(k.Family),
		Src:       k.Src().String(),
		Dst:       k.Dst().String(),
		SrcPort:   k.SrcPort(),
		DstPort:   k.DstPort(),
		Packets:   f.Stats.Packets,
		Bytes:     f.Stats.Bytes,
		Drops:     f.Stats.Drops,
	}
	if k.Proto == 6 {
		r.TCPFlags = TCPFlagLetters(f.Stats.TcpFlags)
		r.TCPFlagBits = f.Stats.TcpFlags
	}
	if seen != nil {
		r.FirstSeen = seen(f.Stats.FirstJiffies).UTC()
		r.LastSeen = seen(f.Stats.LastJiffies).UTC()
	}
	return r
}

// SetPod fills the pod fields from "namespace/name".
func (r *Record) SetPod(key string) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		r.Pod = key
		return
	}
	r.Namespace, r.Pod = ns, name
}

// SrcAddr and DstAddr are "ip:port" ("[ip]:port" for IPv6), or the bare
// address for protocols without ports.
func (r Record) SrcAddr() string { return hostPort(r.Src, r.SrcPort, r.Proto) }
func (r Record) DstAddr() string { return hostPort(r.Dst, r.DstPort, r.Proto) }

func hostPort(ip string, port uint16, proto string) string {
	if proto != "tcp" && proto != "udp" {
		return ip
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

// tcpFlagLetters, in bit order: FIN 0x01 … CWR 0x80.
const tcpFlagLetters = "FSRPAUEC"

// TCPFlagLetters renders TCP flags as letters in bit order, e.g. 0x1b
// (FIN SYN PSH ACK) as "FSPA"; "" for none.
func TCPFlagLetters(bits uint32) string {
	var b strings.Builder
	for i := range len(tcpFlagLetters) {
		if bits&(1<<i) != 0 {
			b.WriteByte(tcpFlagLetters[i])
		}
	}
	return b.String()
}
