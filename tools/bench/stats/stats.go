// Package stats holds the few statistics kubeshaper's benchmarks quote:
// medians and quantiles of repeated runs, a distribution-free confidence
// interval of the median, and the machine's load beside every figure. One
// copy for tools/bench and the agent benchmarks (tools/bench/agentbench).
package stats

import (
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// LoadAvg is the 1-minute load average (0 if unreadable): quoted beside
// every figure, since this machine's cores are shared.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// Median of unsorted values (interpolated between the middle two).
func Median(v []float64) float64 { return Quantile(sorted(v), 0.5) }

// Quantile q in [0,1] of sorted values, interpolated; NaN for none.
func Quantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

// Percentile p in [0,100] of unsorted values by nearest rank (a value
// that was measured, never an interpolation); NaN for none.
func Percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := sorted(v)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// MedianCI is a distribution-free confidence interval (≥ 95 %) of the
// median of sorted values: order statistics k and n-1-k, k the largest
// with P(Binomial(n, ½) ≤ k) ≤ 2.5 %. With too few values for that, the
// whole range.
func MedianCI(s []float64) [2]float64 {
	n := len(s)
	if n == 0 {
		return [2]float64{math.NaN(), math.NaN()}
	}
	k, cum := -1, 0.0
	for i := 0; i < n; i++ {
		cum += binomial(n, i) / math.Pow(2, float64(n))
		if cum > 0.025 {
			break
		}
		k = i
	}
	if k < 0 {
		return [2]float64{s[0], s[n-1]}
	}
	return [2]float64{s[k], s[n-1-k]}
}

// binomial is n choose k.
func binomial(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}

// MinMax of the values (+Inf, -Inf for none).
func MinMax(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

func sorted(v []float64) []float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}
