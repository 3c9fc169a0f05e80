package guest

import (
	"math"
	"testing"
	"time"
)

// The conversions the real-traffic tests rest on, checked without a kernel.

func TestWireBytes(t *testing.T) {
	const hdr, mss = 66, 1448
	// One 64 KB GSO skb of 45 full segments: rx_bytes counts one header,
	// the wire 45.
	skb := rxCount{bytes: hdr + 45*mss, packets: 1}
	if got, want := wireBytes(skb, hdr, mss), float64(45*(hdr+mss)); math.Abs(got-want) > 1e-6 {
		t.Errorf("GSO skb: %.1f wire bytes, want %.0f", got, want)
	}
	// Segmented already (one frame per skb): rx_bytes is the wire.
	frames := rxCount{bytes: 1000 * (hdr + mss), packets: 1000}
	if got := wireBytes(frames, hdr, mss); math.Abs(got-float64(frames.bytes)) > 1e-6 {
		t.Errorf("frames: %.1f wire bytes, want %d", got, frames.bytes)
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 101; i++ {
		d = append(d, time.Duration(102-i)*time.Millisecond) // 101 … 1 ms
	}
	s, err := summarize(d)
	if err != nil {
		t.Fatal(err)
	}
	if s.median != 51*time.Millisecond || s.min != time.Millisecond || s.max != 101*time.Millisecond ||
		s.p10 != 11*time.Millisecond || s.p90 != 91*time.Millisecond || s.mean != 51*time.Millisecond {
		t.Errorf("summary %+v", s)
	}
	if _, err := summarize(nil); err == nil {
		t.Error("no samples: no error")
	}
}

// TestTransferRates: a 10 s transfer at exactly the target after a first
// second at 1.5×, sampled every 20 ms with one 300 ms stall of the
// sampler, and data drained after the end that must not count.
func TestTransferRates(t *testing.T) {
	const target = 50e6
	// Bytes delivered by time at: data from 0.5 s to 10.5 s, the first
	// second at 1.5×, then the target; after 10.5 s a drain at 2× that
	// must be left out.
	bytesAt := func(at time.Duration) uint64 {
		sec := func(d time.Duration) float64 { return d.Seconds() }
		var b float64
		b += 1.5 * target / 8 * sec(min(max(at-500*time.Millisecond, 0), time.Second))
		b += target / 8 * sec(max(at-1500*time.Millisecond, 0))
		b += target / 8 * sec(max(at-10500*time.Millisecond, 0))
		return uint64(b)
	}
	var s []wireSample
	for at := time.Duration(0); at <= 12*time.Second; at += 20 * time.Millisecond {
		if at > 5*time.Second && at < 5300*time.Millisecond {
			continue // the sampler stalled
		}
		s = append(s, wireSample{at, bytesAt(at)})
	}
	r, err := rates(s, 10500*time.Millisecond, target)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.wire-1) > 0.001 {
		t.Errorf("wire %.4f, want 1", r.wire)
	}
	if math.Abs(r.firstSecond-1.5) > 0.03 {
		t.Errorf("first second %.3f, want 1.5", r.firstSecond)
	}
	if math.Abs(r.p5-1) > 0.001 || math.Abs(r.p95-1) > 0.001 {
		t.Errorf("100 ms p5–p95 %.3f–%.3f, want 1–1", r.p5, r.p95)
	}
	if r.maxGap < 300*time.Millisecond || r.bins < 85 || r.bins > 91 {
		t.Errorf("longest gap %v, %d bins: want ≥ 300 ms and ~88", r.maxGap, r.bins)
	}
	if _, err := rates(s[:60], time.Hour, target); err == nil {
		t.Error("1.2 s of samples: want an error (no steady window)")
	}
}
