package netlab

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// TCPRate sends as fast as TCP allows from one pod to another for d and
// returns the goodput the receiver saw, in bits per second, measured from
// the first byte received to the last.
func TCPRate(from, to *Pod, d time.Duration) (float64, error) {
	var ln net.Listener
	err := podnet.Do(to.Netns, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(to.IP.String(), "0"))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("listening in %s: %w", to.Name, err)
	}
	defer ln.Close()
	type result struct {
		bytes       int64
		first, last time.Time
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				now := time.Now()
				if r.bytes == 0 {
					r.first = now
				}
				r.bytes += int64(n)
				r.last = now
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = err
				break
			}
		}
		done <- r
	}()
	var conn net.Conn
	port := ln.Addr().(*net.TCPAddr).Port
	err = podnet.Do(from.Netns, func() (err error) {
		conn, err = net.DialTimeout("tcp4", net.JoinHostPort(to.IP.String(), strconv.Itoa(port)), 5*time.Second)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("dialing from %s: %w", from.Name, err)
	}
	// A small send buffer keeps the tail that drains after the deadline
	// short at low rates.
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetWriteBuffer(256 << 10)
	}
	buf := make([]byte, 256<<10)
	deadline := time.Now().Add(d)
	conn.SetWriteDeadline(deadline)
	for time.Now().Before(deadline) {
		if _, err := conn.Write(buf); err != nil {
			break // the deadline: a write blocked by the limit
		}
	}
	conn.Close()
	select {
	case r := <-done:
		if r.err != nil {
			return 0, r.err
		}
		span := r.last.Sub(r.first).Seconds()
		if span <= 0 {
			return 0, fmt.Errorf("received %d bytes in no time", r.bytes)
		}
		return float64(r.bytes) * 8 / span, nil
	case <-time.After(d + 10*time.Second):
		return 0, fmt.Errorf("receiver in %s did not finish", to.Name)
	}
}
