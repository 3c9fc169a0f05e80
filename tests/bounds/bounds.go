// Package bounds sizes the statistical tolerances of kubeshaper's tests for
// a whole CI run, not for one assertion.
//
// The arithmetic. A CI run (`make test`) makes many random checks: about
// 20 in pkg/datapath (loss, Gilbert-Elliott, duplicate and corrupt counts),
// which run on the host and again in each of five kernels' guests (120),
// and some 15 more on the host (real-traffic loss, Gilbert and duplicate
// counts in pkg/shaper, the agent's monitoring test, the real node's loss
// step): about 135 (counted 2026-12). Budget: a correct datapath fails a
// whole run by chance less than once in 1,000 runs. By the union bound it
// is enough that each check fails by chance with probability at most
// 0.001 / Checks; Checks is set to 1,000 (7× the count, so new checks fit
// without revisiting this), so each check gets Q = 1e-6, split between its
// two tails.
//
// Counts that are binomial (n independent packets, each with probability
// p) get an exact interval from the binomial distribution itself
// (Binomial): the normal approximation understates the upper tail when n·p
// is small (at n·p = 100 a "5σ" bound has a true tail near 1e-5, ten times
// the budget). Other statistics (a Gilbert-Elliott loss count with its
// correlated states, a mean of geometric burst lengths) are sums of many
// weakly dependent terms whose distribution is close to normal at the
// sample sizes used; they get Z standard deviations, Z = 4.9 being the
// two-sided normal quantile for q = 1e-6.
package bounds

import "math"

// Checks is the number of random checks a CI run is budgeted for, and Q
// the chance-failure probability allowed to each.
const (
	Checks = 1000
	Q      = 0.001 / Checks
)

// Z is the two-sided standard normal quantile for Q: P(|N(0,1)| > Z) =
// 9.6e-7 ≤ Q.
const Z = 4.9

// Binomial returns the interval [lo, hi] that a Binomial(n, p) count falls
// outside of with probability at most Q (at most Q/2 on each side),
// computed exactly by summing the distribution's terms outward from the
// tails.
func Binomial(n int64, p float64) (lo, hi int64) {
	switch {
	case n <= 0 || p <= 0:
		return 0, 0
	case p >= 1:
		return n, n
	}
	// log P(X = k), by log-gamma.
	lp, lq := math.Log(p), math.Log1p(-p)
	lgN, _ := math.Lgamma(float64(n) + 1)
	logPMF := func(k int64) float64 {
		a, _ := math.Lgamma(float64(k) + 1)
		b, _ := math.Lgamma(float64(n-k) + 1)
		return lgN - a - b + float64(k)*lp + float64(n-k)*lq
	}
	mean := float64(n) * p
	sd := math.Sqrt(mean * (1 - p))
	// Start well beyond any plausible quantile (12 sd, at least 40 counts)
	// and walk inward while the tail mass stays within Q/2. Terms so far
	// out are below 1e-30: starting there loses nothing.
	span := int64(12*sd) + 40
	tail := 0.0
	lo = max(0, int64(mean)-span)
	for k := lo; k <= int64(mean); k++ {
		tail += math.Exp(logPMF(k))
		if tail > Q/2 {
			lo = k
			break
		}
	}
	tail = 0
	hi = min(n, int64(math.Ceil(mean))+span)
	for k := hi; k >= int64(math.Ceil(mean)); k-- {
		tail += math.Exp(logPMF(k))
		if tail > Q/2 {
			hi = k
			break
		}
	}
	return lo, hi
}

// Normal returns mean ± Z·sd, for statistics that are close to normal.
func Normal(mean, sd float64) (lo, hi float64) { return mean - Z*sd, mean + Z*sd }
