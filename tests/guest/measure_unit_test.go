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
