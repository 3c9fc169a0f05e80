// Command traffic is the small traffic generator of kubeshaper's real-node
// tests and demo: one static binary, shipped in the image
// kubeshaper/traffic:dev, that is both the receiver (`traffic serve`, the
// container's command) and the sender (`traffic tcp|udp`, run with
// `kubectl exec` in another pod). Results are one JSON object on stdout.
//
// Protocol, on one TCP port (default 5001) and one UDP port (default 5002):
//
//	TCP 'S'                    client streams data until it closes its write
//	                           side; the server answers a JSON tcpResult
//	                           measured on the receiving side (first byte to
//	                           EOF, 100 ms bins)
//	TCP 'R' <8-byte ns>        the server streams to the client for that long;
//	                           the client measures
//	TCP 'U' <8-byte session>   the server answers a JSON udpCount: how many
//	                           distinct datagrams of that session it received
//	UDP <8-byte session><4-byte seq><padding>
//
// Numbers are big-endian.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

const binWidth = 100 * time.Millisecond

// tcpResult is what the receiving side measured.
type tcpResult struct {
	Direction string    `json:"direction"` // "send": this pod sent; "receive": it received
	Bytes     int64     `json:"bytes"`
	Seconds   float64   `json:"seconds"`
	BitsPerS  float64   `json:"bits_per_second"`
	BinMS     int       `json:"bin_ms"`
	Bins      []float64 `json:"bins_bits_per_second"` // throughput per 100 ms bin
}

// udpCount is the receiver's view of one UDP session.
type udpCount struct {
	Session  uint64 `json:"session"`
	Received uint64 `json:"received"` // distinct sequence numbers
}

// udpResult is what `traffic udp` prints.
type udpResult struct {
	Sent     uint64  `json:"sent"`
	Received uint64  `json:"received"`
	Lost     uint64  `json:"lost"`
	Loss     float64 `json:"loss"`
	Seconds  float64 `json:"seconds"`
	Size     int     `json:"size"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "tcp":
		err = tcpClient(os.Args[2:])
	case "udp":
		err = udpClient(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "traffic: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  traffic serve [--tcp :5001] [--udp :5002]
  traffic tcp --to HOST[:5001] [--duration 4s] [--reverse]
  traffic udp --to HOST [--port 5002] [--ctl 5001] [--count 20000] [--pps 5000] [--size 200]
`)
	os.Exit(2)
}

// ---------------------------------------------------------------- server

type server struct {
	mu       sync.Mutex
	sessions map[uint64]*session
	order    []uint64 // oldest first, to bound memory
}

type session struct {
	seen     []uint64 // bitset of sequence numbers
	received uint64
}

const maxSessions = 256

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	tcpAddr := fs.String("tcp", ":5001", "TCP listen address")
	udpAddr := fs.String("udp", ":5002", "UDP listen address")
	fs.Parse(args)

	s := &server{sessions: map[uint64]*session{}}
	ln, err := net.Listen("tcp", *tcpAddr)
	if err != nil {
		return err
	}
	uc, err := net.ListenPacket("udp", *udpAddr)
	if err != nil {
		return err
	}
	if u, ok := uc.(*net.UDPConn); ok {
		u.SetReadBuffer(8 << 20) // capped by net.core.rmem_max; best effort
	}
	go s.udpLoop(uc)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.handle(c)
		}
	}()
	fmt.Fprintf(os.Stderr, "traffic: serving TCP %s, UDP %s\n", *tcpAddr, *udpAddr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ln.Close()
	uc.Close()
	return nil
}

func (s *server) udpLoop(c net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 12 {
			continue
		}
		s.record(binary.BigEndian.Uint64(buf[:8]), binary.BigEndian.Uint32(buf[8:12]))
	}
}

func (s *server) record(id uint64, seq uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if ss == nil {
		ss = &session{}
		s.sessions[id] = ss
		s.order = append(s.order, id)
		if len(s.order) > maxSessions {
			delete(s.sessions, s.order[0])
			s.order = s.order[1:]
		}
	}
	w := int(seq / 64)
	if w >= 1<<20 { // 64 M sequence numbers: far beyond any test
		return
	}
	for len(ss.seen) <= w {
		ss.seen = append(ss.seen, 0)
	}
	bit := uint64(1) << (seq % 64)
	if ss.seen[w]&bit == 0 {
		ss.seen[w] |= bit
		ss.received++
	}
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	var cmd [1]byte
	if _, err := io.ReadFull(c, cmd[:]); err != nil {
		return
	}
	switch cmd[0] {
	case 'S':
		res := receive(c)
		res.Direction = "send"
		json.NewEncoder(c).Encode(res)
	case 'R':
		var d [8]byte
		if _, err := io.ReadFull(c, d[:]); err != nil {
			return
		}
		stream(c, time.Duration(binary.BigEndian.Uint64(d[:])))
	case 'U':
		var id [8]byte
		if _, err := io.ReadFull(c, id[:]); err != nil {
			return
		}
		sid := binary.BigEndian.Uint64(id[:])
		s.mu.Lock()
		var n uint64
		if ss := s.sessions[sid]; ss != nil {
			n = ss.received
		}
		s.mu.Unlock()
		json.NewEncoder(c).Encode(udpCount{Session: sid, Received: n})
	}
}

// receive reads until EOF and measures from the first byte to the last.
func receive(r io.Reader) tcpResult {
	buf := make([]byte, 256<<10)
	var total int64
	var first, last time.Time
	var bins []float64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			last = now
			total += int64(n)
			i := int(now.Sub(first) / binWidth)
			for len(bins) <= i {
				bins = append(bins, 0)
			}
			bins[i] += float64(n)
		}
		if err != nil {
			break
		}
	}
	res := tcpResult{Bytes: total, BinMS: int(binWidth / time.Millisecond)}
	if secs := last.Sub(first).Seconds(); secs > 0 {
		res.Seconds = secs
		res.BitsPerS = float64(total) * 8 / secs
	}
	for _, b := range bins {
		res.Bins = append(res.Bins, b*8/binWidth.Seconds())
	}
	return res
}

func stream(w io.Writer, d time.Duration) {
	buf := make([]byte, 128<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
}

// ---------------------------------------------------------------- clients

func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(host, port)
}

func tcpClient(args []string) error {
	fs := flag.NewFlagSet("tcp", flag.ExitOnError)
	to := fs.String("to", "", "server HOST[:PORT]")
	dur := fs.Duration("duration", 4*time.Second, "how long to send")
	reverse := fs.Bool("reverse", false, "the server sends, this pod receives")
	fs.Parse(args)
	if *to == "" {
		return errors.New("tcp: --to is required")
	}
	c, err := net.DialTimeout("tcp", withPort(*to, "5001"), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if *reverse {
		var hdr [9]byte
		hdr[0] = 'R'
		binary.BigEndian.PutUint64(hdr[1:], uint64(*dur))
		if _, err := c.Write(hdr[:]); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(*dur + 30*time.Second))
		res := receive(c)
		res.Direction = "receive"
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	if _, err := c.Write([]byte{'S'}); err != nil {
		return err
	}
	stream(c, *dur)
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	// What is still queued drains at the shaped rate: allow for it.
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading the receiver's result: %w", err)
	}
	_, err = os.Stdout.Write(line)
	return err
}

func udpClient(args []string) error {
	fs := flag.NewFlagSet("udp", flag.ExitOnError)
	to := fs.String("to", "", "server HOST")
	port := fs.String("port", "5002", "UDP port")
	ctl := fs.String("ctl", "5001", "TCP control port")
	count := fs.Uint64("count", 20000, "datagrams to send")
	pps := fs.Int("pps", 5000, "datagrams per second")
	size := fs.Int("size", 200, "UDP payload bytes (>= 12)")
	fs.Parse(args)
	if *to == "" {
		return errors.New("udp: --to is required")
	}
	if *size < 12 {
		*size = 12
	}
	if *pps <= 0 {
		*pps = 5000
	}
	c, err := net.Dial("udp", net.JoinHostPort(*to, *port))
	if err != nil {
		return err
	}
	defer c.Close()
	sid := rand.Uint64()
	pkt := make([]byte, *size)
	binary.BigEndian.PutUint64(pkt[:8], sid)
	// Paced in 1 ms ticks so the burst per tick stays a few packets.
	start := time.Now()
	var sent uint64
	for sent < *count {
		due := uint64(time.Since(start).Seconds()*float64(*pps)) + 1
		for ; sent < due && sent < *count; sent++ {
			binary.BigEndian.PutUint32(pkt[8:12], uint32(sent))
			if _, err := c.Write(pkt); err != nil {
				// ENOBUFS or ECONNREFUSED from an earlier ICMP: not sent.
				var errno syscall.Errno
				if errors.As(err, &errno) && (errno == syscall.ENOBUFS || errno == syscall.ECONNREFUSED) {
					sent--
					time.Sleep(time.Millisecond)
					continue
				}
				return err
			}
		}
		time.Sleep(time.Millisecond)
	}
	secs := time.Since(start).Seconds()
	time.Sleep(500 * time.Millisecond) // let the last datagrams land

	cc, err := net.DialTimeout("tcp", net.JoinHostPort(*to, *ctl), 5*time.Second)
	if err != nil {
		return err
	}
	defer cc.Close()
	var hdr [9]byte
	hdr[0] = 'U'
	binary.BigEndian.PutUint64(hdr[1:], sid)
	if _, err := cc.Write(hdr[:]); err != nil {
		return err
	}
	cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got udpCount
	if err := json.NewDecoder(cc).Decode(&got); err != nil {
		return fmt.Errorf("reading the receiver's count: %w", err)
	}
	res := udpResult{Sent: sent, Received: got.Received, Seconds: secs, Size: *size}
	if got.Received <= sent {
		res.Lost = sent - got.Received
	}
	res.Loss = float64(res.Lost) / float64(sent)
	return json.NewEncoder(os.Stdout).Encode(res)
}
