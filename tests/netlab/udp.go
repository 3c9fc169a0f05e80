package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
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
// another's port and counts what arrives until the receiver has been idle
// for half a second. No socket buffer may overflow, or the count would not
// be the rule's: the receive buffer is forced to 8 MiB (past rmem_max, as
// root), and the sender keeps at most udpWindow datagrams ahead of the
// highest sequence number received — a receiver on a slow (emulated, or
// busy) CPU sets the pace. Losses do not stall it: later datagrams arrive;
// where none do (a 100 % loss rule), it waits at most udpStall per window.
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
	if err := forceReadBuffer(conn, 8<<20); err != nil {
		return res, fmt.Errorf("receive buffer in %s: %w", to.Name, err)
	}
	var highest atomic.Int64
	highest.Store(-1)
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
			if int64(seq) > highest.Load() {
				highest.Store(int64(seq))
			}
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
			for start := time.Now(); int64(i)-highest.Load() > udpWindow && time.Since(start) < udpStall; {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
	<-done
	return res, nil
}

const (
	// udpWindow datagrams in flight at most: far below what 8 MiB holds
	// (a small datagram's buffer cost is about 1 KiB), far above one
	// loss burst of any rule a test asks for.
	udpWindow = 1024
	udpStall  = 200 * time.Millisecond
)

// forceReadBuffer sets SO_RCVBUFFORCE: SetReadBuffer is capped by
// net.core.rmem_max (208 KiB by default, as in the test guests).
func forceReadBuffer(c *net.UDPConn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
	}); err != nil {
		return err
	}
	return serr
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
	c, err := NetCounters(p, "snmp")
	if err != nil {
		return 0, err
	}
	v, ok := c[proto+":"+field]
	if !ok {
		return 0, fmt.Errorf("no %s %s in /proc/net/snmp", proto, field)
	}
	return v, nil
}
