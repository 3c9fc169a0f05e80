package netlab

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// DeliveredWireBytes is what pod p's IP stack has taken in since its netns
// was made, as bytes on the wire: the receiver-side measure of a limit.
//
// Why not eth0's rx_bytes: a veth counts a packet as received when its peer
// transmits it, and bpf_redirect_peer counts it when the redirect is made —
// both before the pod's own tc ingress hook, so a pod-side ingress limit's
// drops would be counted as delivered (measured here: rx_bytes 1.09-1.14×
// a 50 Mbit/s pod-side limit whose delivered rate is 1.00×). The IP
// counters of the pod's netns are taken after that hook (ip_rcv).
//
// The IP counters see a GSO packet as one datagram of InOctets bytes
// carrying gso_segs segments (the InNoECT/ECT/CE packet counters add
// segments); on the wire each segment has its own Ethernet, IP and TCP
// header. TCP headers are taken as 32 bytes (Linux's default timestamps
// option); the estimate is exact for unsegmented packets, whatever the
// protocol.
func DeliveredWireBytes(p *Pod) (uint64, error) {
	c, err := NetCounters(p, "snmp", "netstat")
	if err != nil {
		return 0, err
	}
	datagrams, octets := c["Ip:InReceives"], c["IpExt:InOctets"]
	segs := c["IpExt:InNoECTPkts"] + c["IpExt:InECT1Pkts"] + c["IpExt:InECT0Pkts"] + c["IpExt:InCEPkts"]
	if segs < datagrams {
		segs = datagrams // kernels without the ECN counters
	}
	const ethHdr, ipv4TCPHdr = 14, 20 + 32
	return octets + ethHdr*segs + ipv4TCPHdr*(segs-datagrams), nil
}

// NetCounters reads /proc/net/<file> (snmp, netstat) as pod p's netns
// sees it, keyed "Group:Name" ("Ip:InReceives", "IpExt:InOctets"). The
// files are pairs of lines led by the group: names, then values. Values
// that are not unsigned integers (Icmp's signed ones) are left out.
func NetCounters(p *Pod, files ...string) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := podnet.Do(p.Netns, func() error {
		for _, f := range files {
			// thread-self: /proc/self/net is the netns of the process's
			// leader thread, not of this (locked, moved) thread.
			b, err := os.ReadFile("/proc/thread-self/net/" + f)
			if err != nil {
				return err
			}
			var names []string
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				if len(fields) == 0 {
					continue
				}
				if names == nil || names[0] != fields[0] {
					names = fields
					continue
				}
				for i := 1; i < len(names) && i < len(fields); i++ {
					if v, err := strconv.ParseUint(fields[i], 10, 64); err == nil {
						out[strings.TrimSuffix(fields[0], ":")+":"+names[i]] = v
					}
				}
				names = nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s's /proc/net counters: %w", p.Name, err)
	}
	return out, nil
}
