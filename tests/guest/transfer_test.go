package guest

import (
	"fmt"
	"time"

	benchstats "github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

// What one bulk transfer's receiver-side samples say, computed as
// tools/bench computes its pacing figures (make bench-pacing on the host),
// so that the guest's rows read like the host's: the wire rate over a
// steady window from 1 s after the first data to the end, the first
// second's rate, and 100 ms bins after the first second.

// wireSample is a reading of the receiving pod's delivered wire bytes
// (netlab.DeliveredWireBytes) at time at (since the sampler started).
type wireSample struct {
	at    time.Duration
	bytes uint64
}

// sampleData is the growth of a sample over its predecessor that counts
// as data rather than probes or ACK-sized traffic: at 10 Mbit/s a 20 ms
// interval carries 25 KB, one UDP probe 106 bytes.
const sampleData = 3000

// transferRates are the figures of one transfer, as ratios of the target.
type transferRates struct {
	wire, firstSecond float64
	p5, p95           float64 // 100 ms bins after the first second
	bins              int
	steady            time.Duration
	// maxGap is the longest interval between two samples: a TCG guest
	// whose vCPUs stall shows it here (and its 100 ms bins merge).
	maxGap time.Duration
}

// rates analyzes the samples of a transfer that ended at end (samples at
// or after it are left out: what drains after the senders stopped is not
// the steady state).
func rates(s []wireSample, end time.Duration, target float64) (transferRates, error) {
	var r transferRates
	for len(s) > 0 && s[len(s)-1].at >= end {
		s = s[:len(s)-1]
	}
	first := -1
	for i := 1; i < len(s); i++ {
		if d := s[i].at - s[i-1].at; d > r.maxGap {
			r.maxGap = d
		}
		if first < 0 && s[i].bytes-s[i-1].bytes > sampleData {
			first = i
		}
	}
	if first < 0 {
		return r, fmt.Errorf("no data in %d samples", len(s))
	}
	t0 := s[first-1].at               // data began after this sample
	at := func(t time.Duration) int { // first sample at or after t
		for i := first - 1; i < len(s); i++ {
			if s[i].at >= t {
				return i
			}
		}
		return len(s) - 1
	}
	rate := func(i, j int) float64 {
		dt := (s[j].at - s[i].at).Seconds()
		if dt <= 0 {
			return 0
		}
		return float64(s[j].bytes-s[i].bytes) * 8 / dt / target
	}
	last := len(s) - 1
	one := at(t0 + time.Second)
	if s[last].at-s[one].at < time.Second {
		return r, fmt.Errorf("data for %v only: too short for a steady window (1 s after the first data)", s[last].at-t0)
	}
	r.firstSecond = rate(first-1, one)
	r.wire = rate(one, last)
	r.steady = s[last].at - s[one].at
	// 100 ms bins from t0; a gap longer than a bin (a stalled sampler)
	// merges bins: the rate is over the real span between samples.
	var after []float64
	i := first - 1
	for k := 1; ; k++ {
		edge := t0 + time.Duration(k)*100*time.Millisecond
		if edge > s[last].at {
			break
		}
		j := at(edge)
		if j == i {
			continue
		}
		if s[i].at-t0 >= time.Second {
			after = append(after, rate(i, j))
		}
		i = j
	}
	r.bins = len(after)
	if len(after) > 0 {
		r.p5, r.p95 = benchstats.Percentile(after, 5), benchstats.Percentile(after, 95)
	}
	return r, nil
}

// rttPercentiles are the 50th and 99th percentiles of round-trip times,
// in ms (NaN for none).
func rttPercentiles(d []time.Duration) [2]float64 {
	v := make([]float64, len(d))
	for i, x := range d {
		v[i] = ms(x)
	}
	return [2]float64{benchstats.Percentile(v, 50), benchstats.Percentile(v, 99)}
}
