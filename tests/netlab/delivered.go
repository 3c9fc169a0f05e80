package netlab

import (
	"bufio"
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
	var c ipCounters
	err := podnet.Do(p.Netns, func() error {
		// thread-self: /proc/self/net is the netns of the process's
		// leader thread, not of this (locked, moved) thread.
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			if err := c.read(f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading %s's IP counters: %w", p.Name, err)
	}
	if c.segs < c.datagrams {
		c.segs = c.datagrams // kernels without the ECN counters
	}
	const ethHdr, ipv4TCPHdr = 14, 20 + 32
	return c.octets + ethHdr*c.segs + ipv4TCPHdr*(c.segs-c.datagrams), nil
}

type ipCounters struct{ datagrams, octets, segs uint64 }

// read parses one /proc/net/{snmp,netstat} file: pairs of lines, a header
// line of names and a line of values, both led by the group ("Ip:").
func (c *ipCounters) read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || (fields[0] != "Ip:" && fields[0] != "IpExt:") {
			continue
		}
		if names == nil || names[0] != fields[0] {
			names = fields
			continue
		}
		for i := 1; i < len(names) && i < len(fields); i++ {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				continue // Ip: Forwarding and DefaultTTL are small ints; others may be signed
			}
			switch fields[0] + names[i] {
			case "Ip:InReceives":
				c.datagrams = v
			case "IpExt:InOctets":
				c.octets = v
			case "IpExt:InNoECTPkts", "IpExt:InECT1Pkts", "IpExt:InECT0Pkts", "IpExt:InCEPkts":
				c.segs += v
			}
		}
		names = nil
	}
	return sc.Err()
}
