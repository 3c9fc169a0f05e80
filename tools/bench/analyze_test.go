package main

import (
	"math"
	"testing"
	"time"
)

func TestWireBytes(t *testing.T) {
	for _, c := range []struct {
		name        string
		bytes, pkts uint64
		want        float64
	}{
		{"full single segments", 10 * 1514, 10, 10 * 1514},
		{"one 45-segment GSO skb", tcpHdr + 45*tcpMSS, 1, 45 * 1514},
		{"small packets (ACKs, control)", 10 * 66, 10, 10 * 66},
		{"nothing", 0, 0, 0},
	} {
		if got := wireBytes(c.bytes, c.pkts); math.Abs(got-c.want) > 1e-6 {
			t.Errorf("%s: wireBytes(%d, %d) = %f, want %f", c.name, c.bytes, c.pkts, got, c.want)
		}
	}
}

// flow builds samples every 50 ms of a transfer at bps wire bits/s carried
// in GSO skbs of segs segments, starting at start and lasting dur, with an
// extra burst of burstBytes in its first 100 ms.
func flow(bps float64, segs int, start, dur time.Duration, burstBytes float64) []sample {
	var s []sample
	step := 50 * time.Millisecond
	skbWire := float64(segs) * 1514
	skbLen := float64(tcpHdr + segs*tcpMSS)
	for t := time.Duration(0); t <= start+dur+500*time.Millisecond; t += step {
		var wire float64
		if t > start {
			e := t - start
			if e > dur {
				e = dur
			}
			wire = bps / 8 * e.Seconds()
			b := burstBytes * math.Min(1, (t-start).Seconds()/0.1)
			wire += b
		}
		n := math.Floor(wire / skbWire)
		s = append(s, sample{T: t, Bytes: uint64(n * skbLen), Pkts: uint64(n) + 3}) // +3: control packets before the data
	}
	return s
}

func TestAnalyze(t *testing.T) {
	// 1 Gbit/s in 45-segment skbs for 10 s, data starting at 0.32 s and
	// ending mid-interval: the partial last interval must not count.
	s := flow(1e9, 45, 320*time.Millisecond, 10*time.Second+20*time.Millisecond, 0)
	r, err := analyze(s)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.WireBps/1e9-1) > 0.002 {
		t.Errorf("wire %f, want 1e9 ±0.2 %%", r.WireBps)
	}
	if r.RawBps >= r.WireBps {
		t.Errorf("rx_bytes rate %f not below wire %f (GSO headers)", r.RawBps, r.WireBps)
	}
	if r.SteadyS < 8.5 || r.SteadyS > 9.1 {
		t.Errorf("steady window %f s, want ~9", r.SteadyS)
	}
	if r.FirstSecBps < 0.9e9 || r.FirstSecBps > 1.0e9 {
		t.Errorf("first second %f", r.FirstSecBps)
	}
	if n := len(r.PerSecondBps); n < 9 || n > 10 {
		t.Errorf("%d per-second rates", n)
	}

	// A 2 MB burst in the first 100 ms at 100 Mbit/s shows in the first
	// second and the peak, not in the steady rate.
	s = flow(100e6, 8, 200*time.Millisecond, 5*time.Second, 2e6)
	r, err = analyze(s)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.WireBps/100e6-1) > 0.005 {
		t.Errorf("wire %f, want 100e6", r.WireBps)
	}
	if r.FirstSecBps < 1.1*100e6 || r.Peak100msBps < 1.5*100e6 {
		t.Errorf("first second %f, peak %f: the burst does not show", r.FirstSecBps, r.Peak100msBps)
	}

	if _, err := analyze(flow(1e6, 1, time.Second, 0, 0)); err == nil {
		t.Error("no data: want an error")
	}
	if _, err := analyze(flow(100e6, 8, 100*time.Millisecond, 1500*time.Millisecond, 0)); err == nil {
		t.Error("1.5 s transfer: want a too-short error")
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]uint64{"10M": 10e6, "100m": 100e6, "1G": 1e9, "5G": 5e9, "250mbit": 250e6, "1500000": 1.5e6, "2.5G": 2.5e9} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[uint64]string{10e6: "10mbit", 5e9: "5gbit", 1500: "1500bit", 2.5e9: "2500mbit"} {
		if got := tcRate(in); got != want {
			t.Errorf("tcRate(%d) = %q, want %q", in, got, want)
		}
	}
	m, err := parseMode("drop:burst=200ms")
	if err != nil || m.burstFor(100e6) != 2500000 {
		t.Errorf("drop:burst=200ms at 100M: %+v %v", m, err)
	}
	m, err = parseMode("drop:burst=128k")
	if err != nil || m.burstFor(1e9) != 131072 {
		t.Errorf("drop:burst=128k: %+v %v", m, err)
	}
	for _, bad := range []string{"tbf:burst=1M", "fast", "drop:burst=", "drop:rate=1"} {
		if _, err := parseMode(bad); err == nil {
			t.Errorf("parseMode(%q): want an error", bad)
		}
	}
	if p := percentile([]float64{5, 1, 4, 2, 3}, 50); p != 3 {
		t.Errorf("p50 = %f", p)
	}
	if p := percentile([]float64{5, 1, 4, 2, 3}, 99); p != 5 {
		t.Errorf("p99 = %f", p)
	}
}

// TestBins100SpansGaps: a sampling gap longer than a bin must not end the
// binning (it did: p5/p95 came out empty for a whole transfer).
func TestBins100SpansGaps(t *testing.T) {
	var s []sample
	var bytes uint64
	for ms := 0; ms <= 5000; ms += 50 {
		if ms == 1500 || ms == 1550 || ms == 1600 {
			continue // a 200 ms gap
		}
		if ms > 0 {
			bytes = uint64(ms) * 125000 / 100 // 10 Mbit/s... of 1-packet intervals
		}
		s = append(s, sample{T: time.Duration(ms) * time.Millisecond, Bytes: bytes, Pkts: uint64(ms)})
	}
	bins, p5, p95 := bins100(s, 10e6)
	if len(bins) < 40 || p5 == 0 || p95 == 0 {
		t.Fatalf("%d bins, p5 %.3f p95 %.3f", len(bins), p5, p95)
	}
}
