package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"time"
)

// Request/response (issue 13): one persistent TCP connection that moves
// -size bytes per exchange while a bulk flow of the same pod saturates the
// limit; the completion time of each exchange is what a user of the pod's
// second connection feels. The client sends an 8-byte header: how many
// bytes it will send and how many it wants back. Pod egress: the client
// (in pod A) uploads -size and gets 1 byte; pod ingress: it sends 8 bytes
// and downloads -size.

type rrResult struct {
	N     int       `json:"n"`
	P50Ms float64   `json:"p50_ms"`
	P99Ms float64   `json:"p99_ms"`
	MaxMs float64   `json:"max_ms"`
	AllMs []float64 `json:"-"`
}

func rrServerMain(args []string) int {
	fs := flag.NewFlagSet("rr-server", flag.ExitOnError)
	addr := fs.String("listen", "", "host:port")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rr-server:", err)
		return 1
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func(c net.Conn) {
			defer c.Close()
			hdr := make([]byte, 8)
			buf := make([]byte, 1<<20)
			for {
				if _, err := io.ReadFull(c, hdr); err != nil {
					return
				}
				up, down := binary.BigEndian.Uint32(hdr), binary.BigEndian.Uint32(hdr[4:])
				if _, err := io.CopyN(io.Discard, c, int64(up)); err != nil {
					return
				}
				for down > 0 {
					n := min(int(down), len(buf))
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
					down -= uint32(n)
				}
			}
		}(c)
	}
}

func rrClientMain(args []string) int {
	fs := flag.NewFlagSet("rr-client", flag.ExitOnError)
	to := fs.String("to", "", "host:port")
	size := fs.Int("size", 100<<10, "bytes per exchange")
	dir := fs.String("dir", "egress", "egress: upload size; ingress: download size")
	dur := fs.Duration("duration", 10*time.Second, "how long")
	gap := fs.Duration("gap", 50*time.Millisecond, "pause between exchanges")
	_ = fs.Parse(args)
	c, err := net.DialTimeout("tcp", *to, 3*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rr-client:", err)
		return 1
	}
	defer c.Close()
	up, down := uint32(*size), uint32(1)
	if *dir == "ingress" {
		up, down = 0, uint32(*size)
	}
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hdr, up)
	binary.BigEndian.PutUint32(hdr[4:], down)
	payload := make([]byte, up)
	in := make([]byte, 1<<20)
	var ms []float64
	end := time.Now().Add(*dur)
	for time.Now().Before(end) {
		t0 := time.Now()
		if _, err := c.Write(append(hdr[:8:8], payload...)); err != nil {
			fmt.Fprintln(os.Stderr, "rr-client:", err)
			return 1
		}
		for got := 0; got < int(down); {
			n, err := c.Read(in)
			if err != nil {
				fmt.Fprintln(os.Stderr, "rr-client:", err)
				return 1
			}
			got += n
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		time.Sleep(*gap)
	}
	sort.Float64s(ms)
	r := rrResult{N: len(ms)}
	if len(ms) > 0 {
		r.P50Ms, r.P99Ms, r.MaxMs = percentile(ms, 50), percentile(ms, 99), ms[len(ms)-1]
	}
	j, _ := json.Marshal(r)
	fmt.Println(string(j))
	return 0
}

// udpSinkMain reads and discards UDP datagrams until killed: a listener
// for the 2× UDP point, so that no ICMP port-unreachable makes the
// connected sender's writes fail.
func udpSinkMain(args []string) int {
	fs := flag.NewFlagSet("udp-sink", flag.ExitOnError)
	addr := fs.String("addr", "", "listen host:port")
	_ = fs.Parse(args)
	la, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp-sink:", err)
		return 1
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udp-sink:", err)
		return 1
	}
	buf := make([]byte, 65536)
	for {
		if _, err := c.Read(buf); err != nil {
			return 1
		}
	}
}
