package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// bulk is one TCP connection sending as fast as it may from one pod to
// another until stopped.
type bulk struct {
	mss      int // the sender's TCP maximum segment size
	received atomic.Int64
	conn     net.Conn
	ln       net.Listener
	done     chan error
	stopping atomic.Bool
}

func startBulk(t *testing.T, from, to *netlab.Pod) *bulk {
	t.Helper()
	b := &bulk{done: make(chan error, 2)}
	err := podnet.Do(to.Netns, func() (err error) {
		b.ln, err = net.Listen("tcp4", net.JoinHostPort(to.IP.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", to.Name, err)
	}
	go func() {
		c, err := b.ln.Accept()
		if err != nil {
			b.done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			b.received.Add(int64(n))
			if err != nil {
				if err == io.EOF || b.stopping.Load() {
					err = nil
				}
				b.done <- err
				return
			}
		}
	}()
	port := strconv.Itoa(b.ln.Addr().(*net.TCPAddr).Port)
	err = podnet.Do(from.Netns, func() (err error) {
		b.conn, err = net.DialTimeout("tcp4", net.JoinHostPort(to.IP.String(), port), 5*time.Second)
		return err
	})
	if err != nil {
		b.ln.Close()
		t.Fatalf("dialing from %s: %v", from.Name, err)
	}
	b.mss = 1448 // Ethernet MTU less IPv4, TCP and timestamp option headers
	if raw, err := b.conn.(*net.TCPConn).SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG); err == nil && v > 0 {
				b.mss = v
			}
		})
	}
	go func() {
		buf := make([]byte, 256<<10)
		for {
			if _, err := b.conn.Write(buf); err != nil {
				if b.stopping.Load() {
					err = nil
				}
				b.done <- err
				return
			}
		}
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *bulk) stop() {
	if b.stopping.Swap(true) {
		return
	}
	b.conn.Close()
	b.ln.Close()
}

// abort stops the sender at once: the connection is reset (linger 0)
// rather than closed, so what its send buffer still holds is dropped
// instead of draining at the limit after the measurement.
func (b *bulk) abort() {
	if tc, ok := b.conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	b.stop()
}

// info is the sender's TCP_INFO in a line: what set its rate (cwnd and
// RTT, the pacing rates TCP and kubeshaper's sock_ops chose, the time it
// was limited by the receiver window or its send buffer).
func (b *bulk) info() string {
	raw, err := b.conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err.Error()
	}
	var ti *unix.TCPInfo
	raw.Control(func(fd uintptr) { ti, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		return fmt.Sprintf("TCP_INFO: %v", err)
	}
	mbit := func(bytesPerSec uint64) float64 { return float64(bytesPerSec) * 8 / 1e6 }
	maxPacing := "none"
	if ti.Max_pacing_rate != ^uint64(0) {
		maxPacing = fmt.Sprintf("%.1f Mbit/s", mbit(ti.Max_pacing_rate))
	}
	return fmt.Sprintf("cwnd %d, srtt %d µs (rttvar %d, min %d), pacing %.1f Mbit/s (max %s), delivery %.1f Mbit/s, busy %d ms (rwnd-limited %d, sndbuf-limited %d)",
		ti.Snd_cwnd, ti.Rtt, ti.Rttvar, ti.Min_rtt, mbit(ti.Pacing_rate), maxPacing, mbit(ti.Delivery_rate),
		ti.Busy_time/1000, ti.Rwnd_limited/1000, ti.Sndbuf_limited/1000)
}

// wait returns once the sender and the receiver have ended (after stop or
// abort), with the first error either saw.
func (b *bulk) wait(timeout time.Duration) error {
	deadline := time.After(timeout)
	var first error
	for range 2 {
		select {
		case err := <-b.done:
			if first == nil {
				first = err
			}
		case <-deadline:
			return fmt.Errorf("not ended after %v", timeout)
		}
	}
	return first
}

// rxCount is a pod's eth0 receive counters.
type rxCount struct{ bytes, packets uint64 }

// rxCounter returns a reader of the pod's eth0 rx counters (netlink, from a
// handle bound to the pod's netns: no thread switching per read).
func rxCounter(t *testing.T, p *netlab.Pod) func() rxCount {
	t.Helper()
	ns, err := netns.GetFromPath(p.Netns)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return func() rxCount {
		l, err := h.LinkByName("eth0")
		if err != nil || l.Attrs().Statistics == nil {
			t.Errorf("reading eth0 stats in %s: %v", p.Name, err)
			return rxCount{}
		}
		return rxCount{l.Attrs().Statistics.RxBytes, l.Attrs().Statistics.RxPackets}
	}
}

// rateSample is a steady-state wire rate: bits per second between the
// first and the last change of the receive counters seen in a window.
type rateSample struct {
	bps     float64 // wire (L2 frames of every TCP segment)
	rxBps   float64 // rx_bytes as counted (one header per GSO skb)
	span    time.Duration
	changes int
	// Of the samples of the shaper's fq queue, how many found it empty: a
	// queue that runs dry means the senders, not the shaper, set the pace.
	qSamples, qEmpty int
}

// wireBytes converts a receive count to the bytes the segments would
// occupy on a wire: a veth hands a GSO skb over whole, counting one set of
// headers (hdr bytes: Ethernet, IP, TCP) for up to 64 KB of payload, while
// rates count hdr per segment of mss payload bytes, as tbf does. Exact for
// full-sized segments, which a bulk TCP sender makes (at most one short
// segment per skb: < 0.1 % at 64 KB skbs). With one segment per skb it is
// rx_bytes itself.
func wireBytes(d rxCount, hdr, mss int) float64 {
	payload := float64(d.bytes) - float64(hdr)*float64(d.packets)
	return payload * float64(hdr+mss) / float64(mss)
}

// wireRate polls read (and qlen, if not nil) for window and returns the
// slope of the counters between their first and last observed changes:
// each change is a frame leaving the shaper, so the slope is the
// departure rate, not blurred by where the window's edges fall between
// frames. A sample is timed at the middle of its read, and only samples
// read within 2 ms anchor the slope (a guest that stalls mid-read would
// otherwise misplace a count in time).
func wireRate(read func() rxCount, qlen func() (uint32, bool), window time.Duration, hdr, mss int) (rateSample, error) {
	const maxRead = 2 * time.Millisecond
	var r rateSample
	end := time.Now().Add(window)
	last := read()
	var first, lastChange time.Time
	var firstC, lastC rxCount
	reads := 0
	for time.Now().Before(end) {
		reads++
		before := time.Now()
		v := read()
		after := time.Now()
		if qlen != nil {
			if n, ok := qlen(); ok {
				r.qSamples++
				if n == 0 {
					r.qEmpty++
				}
			}
		}
		if v != last {
			last = v
			r.changes++
			if after.Sub(before) <= maxRead {
				at := before.Add(after.Sub(before) / 2)
				if first.IsZero() {
					first, firstC = at, v
				}
				lastChange, lastC = at, v
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	if r.changes < 10 || !lastChange.After(first) {
		return r, fmt.Errorf("only %d counter changes in %d reads in %v: no traffic, or a starved guest", r.changes, reads, window)
	}
	r.span = lastChange.Sub(first)
	d := rxCount{lastC.bytes - firstC.bytes, lastC.packets - firstC.packets}
	r.bps = wireBytes(d, hdr, mss) * 8 / r.span.Seconds()
	r.rxBps = float64(d.bytes) * 8 / r.span.Seconds()
	return r, nil
}

// fqQlen returns a reader of the packets queued in the root fq qdisc of
// dev in the netns at nsPath (false when there is none).
func fqQlen(t *testing.T, nsPath, dev string) func() (uint32, bool) {
	t.Helper()
	q := fqQueue(t, nsPath, dev)
	return func() (uint32, bool) {
		s, ok := q()
		return s.qlen, ok
	}
}

// queueStats is what a qdisc reports of its queue.
type queueStats struct{ qlen, drops uint32 }

// fqQueue returns a reader of the root fq qdisc's queue statistics of dev
// in the netns at nsPath (false when there is none).
func fqQueue(t *testing.T, nsPath, dev string) func() (queueStats, bool) {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	link, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	return func() (queueStats, bool) {
		qs, err := h.QdiscList(link)
		if err != nil {
			return queueStats{}, false
		}
		for _, q := range qs {
			a := q.Attrs()
			if q.Type() == "fq" && a.Parent == netlink.HANDLE_ROOT && a.Statistics != nil && a.Statistics.Queue != nil {
				return queueStats{a.Statistics.Queue.Qlen, a.Statistics.Queue.Drops}, true
			}
		}
		return queueStats{}, false
	}
}

// echoServer answers every UDP datagram it receives in pod p with the
// same bytes, until the test ends.
func echoServer(t *testing.T, p *netlab.Pod) *net.UDPAddr {
	t.Helper()
	var pc net.PacketConn
	err := podnet.Do(p.Netns, func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(p.IP.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr)
}

// probeRTTs sends n UDP probes from pod p to the echo server, one every
// interval without waiting for answers, and returns the round-trip times
// of those answered (in send order) and how many were lost.
func probeRTTs(t *testing.T, p *netlab.Pod, server *net.UDPAddr, n int, interval, maxRTT time.Duration) ([]time.Duration, int) {
	t.Helper()
	var conn *net.UDPConn
	err := podnet.Do(p.Netns, func() (err error) {
		conn, err = net.DialUDP("udp4", nil, server)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := make([]time.Time, n)
	rtt := make([]time.Duration, n)
	var mu sync.Mutex
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 64)
		for {
			m, err := conn.Read(buf)
			now := time.Now()
			if err != nil {
				return
			}
			if m < 8 {
				continue
			}
			i := binary.BigEndian.Uint64(buf)
			mu.Lock()
			if i < uint64(n) && rtt[i] == 0 && !sent[i].IsZero() {
				rtt[i] = now.Sub(sent[i])
			}
			mu.Unlock()
		}
	}()
	payload := make([]byte, 64)
	next := time.Now()
	for i := range n {
		binary.BigEndian.PutUint64(payload, uint64(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		if _, err := conn.Write(payload); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		next = next.Add(interval)
		time.Sleep(time.Until(next))
	}
	conn.SetReadDeadline(time.Now().Add(maxRTT + time.Second))
	<-recvDone
	var out []time.Duration
	lost := 0
	for _, d := range rtt {
		if d == 0 {
			lost++
			continue
		}
		out = append(out, d)
	}
	return out, lost
}

type stats struct {
	n                  int
	mean, median       time.Duration
	min, max, p10, p90 time.Duration
}

func summarize(d []time.Duration) (stats, error) {
	if len(d) == 0 {
		return stats{}, errors.New("no samples")
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	pct := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return stats{
		n: len(s), mean: sum / time.Duration(len(s)), median: pct(0.5),
		min: s[0], max: s[len(s)-1], p10: pct(0.10), p90: pct(0.90),
	}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
