package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// UDPResult is what a receiver saw of a numbered UDP stream.
type UDPResult struct {
	Sent, Received int
	// Duplicates counts datagrams received more than once.
	Duplicates int
	// Mangled counts datagrams delivered with a payload other than sent
	// (corruption the receiver's checksum did not catch).
	Mangled int
	// Seen is, per sequence number, how many copies arrived.
	Seen []int
}

// UDPStream sends n numbered datagrams of size bytes from one pod to
// another's port, pacing them (burst datagrams, then a short pause) so
// that no socket buffer overflows, and counts what arrives until the
// receiver has been idle for half a second.
func UDPStream(from, to *Pod, port, n, size int) (UDPResult, error) {
	res := UDPResult{Sent: n, Seen: make([]int, n)}
	if size < 8 {
		size = 8
	}
	var conn *net.UDPConn
	err := podnet.Do(to.Netns, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: to.IP, Port: port})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("listening in %s: %w", to.Name, err)
	}
	defer conn.Close()
	conn.SetReadBuffer(8 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		want := payload(0, size)
		for {
			conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			m, err := conn.Read(buf)
			if err != nil {
				return
			}
			if m != size {
				res.Mangled++
				continue
			}
			seq := int(binary.BigEndian.Uint32(buf))
			binary.BigEndian.PutUint32(want, uint32(seq))
			if seq >= n || string(buf[:m]) != string(want) {
				res.Mangled++
				continue
			}
			res.Received++
			if res.Seen[seq] > 0 {
				res.Duplicates++
				res.Received--
			}
			res.Seen[seq]++
		}
	}()
	var out *net.UDPConn
	err = podnet.Do(from.Netns, func() (err error) {
		out, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: to.IP, Port: port})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("dialing from %s: %w", from.Name, err)
	}
	defer out.Close()
	p := payload(0, size)
	for i := range n {
		binary.BigEndian.PutUint32(p, uint32(i))
		if _, err := out.Write(p); err != nil {
			return res, err
		}
		if i%64 == 63 {
			time.Sleep(time.Millisecond)
		}
	}
	<-done
	return res, nil
}

func payload(seq, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p, uint32(seq))
	for i := 4; i < size; i++ {
		p[i] = byte(i)
	}
	return p
}

// SNMP reads one counter of /proc/net/snmp (e.g. "Udp", "InCsumErrors")
// as the pod's network namespace sees it.
func SNMP(p *Pod, proto, field string) (uint64, error) {
	var b []byte
	err := podnet.Do(p.Netns, func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return 0, err
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, name := range names {
			if name == field && i+1 < len(f) {
				return strconv.ParseUint(f[i+1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/snmp", proto, field)
}
