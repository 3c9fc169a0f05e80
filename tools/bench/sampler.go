package main

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// TCP over IPv4 with timestamps (set in both pods) on a 1500-byte MTU:
// every wire segment carries tcpHdr bytes of L2+L3+L4 headers and at most
// tcpMSS bytes of payload.
const (
	tcpHdr = 14 + 20 + 32
	tcpMSS = 1500 - 20 - 32
	// A sample whose counter grew by more than this many bytes carries
	// data; iperf3's control messages (tens to a few hundred bytes each)
	// stay below it.
	dataThreshold = 3000
)

// sample is one reading of a receiving interface's counters.
type sample struct {
	T     time.Duration // since the sampler started (monotonic clock)
	Bytes uint64        // rx_bytes
	Pkts  uint64        // rx_packets
}

// sampler reads an interface's rx counters (the kernel's own, through
// netlink in the interface's netns: what /sys/class/net/X/statistics shows
// there) every interval, independently of kubeshaper.
type sampler struct {
	h       *netlink.Handle
	index   int
	every   time.Duration
	start   time.Time
	samples []sample
	err     error
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func startSampler(h *netlink.Handle, ifname string, every time.Duration) (*sampler, error) {
	l, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("sampler: %s: %w", ifname, err)
	}
	s := &sampler{h: h, index: l.Attrs().Index, every: every, start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.read(); err != nil {
		return nil, err
	}
	go s.loop()
	return s, nil
}

func (s *sampler) read() error {
	l, err := s.h.LinkByIndex(s.index)
	if err != nil {
		return err
	}
	st := l.Attrs().Statistics
	if st == nil {
		return fmt.Errorf("sampler: no statistics for ifindex %d", s.index)
	}
	s.samples = append(s.samples, sample{T: time.Since(s.start), Bytes: st.RxBytes, Pkts: st.RxPackets})
	return nil
}

func (s *sampler) loop() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			if err := s.read(); err != nil && s.err == nil {
				s.err = err
			}
			return
		case <-t.C:
			if err := s.read(); err != nil && s.err == nil {
				s.err = err
			}
		}
	}
}

// Stop ends sampling and returns the samples.
func (s *sampler) Stop() ([]sample, error) {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return s.samples, s.err
}

// wireBytes converts a counter delta to bytes on a wire. A veth counts one
// skb per packet and skb->len bytes; a GSO skb carries many segments but one
// set of headers. Assuming full-MSS TCP segments, the skbs' payload
// (bytes − pkts·tcpHdr) makes payload/tcpMSS segments, each with its own
// headers on a wire. Never less than the bytes counted (non-GSO traffic).
func wireBytes(bytes, pkts uint64) float64 {
	b, n := float64(bytes), float64(pkts)
	segs := (b - n*tcpHdr) / tcpMSS
	if segs <= n {
		return b
	}
	return b + (segs-n)*tcpHdr
}

// transferRate analyzes one transfer's samples, unless an earlier step
// failed: the first non-nil of errs (the traffic generator's, then the
// sampler's) is returned with a zero flowRate; else analyze's result.
func transferRate(samples []sample, errs ...error) (flowRate, error) {
	for _, err := range errs {
		if err != nil {
			return flowRate{}, err
		}
	}
	return analyze(samples)
}

// iperfErr labels an iperf3 failure as such (nil stays nil).
func iperfErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("iperf3: %w", err)
}

// flowRate is what the samples of one transfer say.
type flowRate struct {
	WireBps      float64   `json:"wire_bps"`         // steady window: 1 s after the first data to the last data
	RawBps       float64   `json:"rx_bytes_bps"`     // same window, rx_bytes as counted (GSO skbs: one header each)
	FirstSecBps  float64   `json:"first_second_bps"` // wire rate over the first second of data
	Peak100msBps float64   `json:"peak_100ms_bps"`   // highest wire rate over ~100 ms within the first second
	SteadyS      float64   `json:"steady_s"`         // length of the steady window
	DataS        float64   `json:"data_s"`           // first to last data
	WireBytes    float64   `json:"wire_bytes"`       // whole transfer
	PerSecondBps []float64 `json:"per_second_bps"`   // wire rate in each second from the first data
	Samples      int       `json:"samples"`
}

// analyze computes the rates from counter samples.
func analyze(s []sample) (flowRate, error) {
	var r flowRate
	r.Samples = len(s)
	if len(s) < 3 {
		return r, fmt.Errorf("only %d samples", len(s))
	}
	first, last := -1, -1
	for i := 1; i < len(s); i++ {
		if s[i].Bytes-s[i-1].Bytes > dataThreshold {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return r, fmt.Errorf("no data received")
	}
	t0 := s[first-1].T // data began after this sample
	// The last data interval is only partly filled (the flow ended inside
	// it): the steady window ends at the sample before it, the last one
	// inside the transfer. (The first-second rate starts at t0, before the
	// first data: it errs low, by at most one interval.)
	full := last - 1
	if full < first {
		full = first
	}
	tEnd := s[full].T
	r.DataS = (tEnd - t0).Seconds()
	r.WireBytes = wireBytes(s[last].Bytes-s[first-1].Bytes, s[last].Pkts-s[first-1].Pkts)
	rate := func(i, j int) float64 {
		dt := (s[j].T - s[i].T).Seconds()
		if dt <= 0 {
			return 0
		}
		return wireBytes(s[j].Bytes-s[i].Bytes, s[j].Pkts-s[i].Pkts) * 8 / dt
	}
	at := func(t time.Duration) int { // first sample at or after t
		for i := first - 1; i < len(s); i++ {
			if s[i].T >= t {
				return i
			}
		}
		return len(s) - 1
	}
	one := at(t0 + time.Second)
	if one > full {
		one = full
	}
	r.FirstSecBps = rate(first-1, one)
	for i := first - 1; i < one; i++ {
		j := at(s[i].T + 100*time.Millisecond)
		if j > one {
			break
		}
		if v := rate(i, j); v > r.Peak100msBps {
			r.Peak100msBps = v
		}
	}
	for k := 1; ; k++ {
		i, j := at(t0+time.Duration(k-1)*time.Second), at(t0+time.Duration(k)*time.Second)
		if j > full || i >= j {
			break
		}
		r.PerSecondBps = append(r.PerSecondBps, math.Round(rate(i, j)))
	}
	if (tEnd - s[one].T) < time.Second {
		return r, fmt.Errorf("data lasted %.2f s: too short for a steady window (1 s after the first data)", r.DataS)
	}
	r.SteadyS = (tEnd - s[one].T).Seconds()
	r.WireBps = rate(one, full)
	r.RawBps = float64(s[full].Bytes-s[one].Bytes) * 8 / r.SteadyS
	return r, nil
}
