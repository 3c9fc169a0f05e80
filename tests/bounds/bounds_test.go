package bounds

import (
	"math"
	"testing"
)

// The interval must hold the mass it promises: check against a direct sum
// of the distribution, and that it is neither trivially wide nor narrow.
func TestBinomialTailsWithinBudget(t *testing.T) {
	for _, c := range []struct {
		n int64
		p float64
	}{{100000, 0.001}, {100000, 0.1}, {20000, 0.01}, {5000, 0.3}, {200, 0.5}, {100000, 0.5}} {
		lo, hi := Binomial(c.n, c.p)
		below, above := 0.0, 0.0
		for k := int64(0); k <= c.n; k++ {
			pmf := math.Exp(logPMF(c.n, c.p, k))
			if k < lo {
				below += pmf
			}
			if k > hi {
				above += pmf
			}
		}
		if below > Q/2 || above > Q/2 {
			t.Errorf("n=%d p=%g: [%d, %d] leaves %.2g below and %.2g above, want each <= %.2g", c.n, c.p, lo, hi, below, above, Q/2)
		}
		// Tight: one count further in on either side exceeds the budget
		// (the interval is the narrowest of its kind), and it is within
		// a few sd of the normal one.
		mean, sd := float64(c.n)*c.p, math.Sqrt(float64(c.n)*c.p*(1-c.p))
		if float64(hi)-mean > 7*sd+2 || mean-float64(lo) > 7*sd+2 || float64(hi)-mean < 4*sd || mean-float64(lo) < 3.5*sd {
			t.Errorf("n=%d p=%g: [%d, %d] is not near mean %.0f ± 5 sd %.1f", c.n, c.p, lo, hi, mean, sd)
		}
	}
}

func logPMF(n int64, p float64, k int64) float64 {
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	c, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - c + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p)
}

func TestZIsTheQuantileOfQ(t *testing.T) {
	if got := math.Erfc(Z / math.Sqrt2); got > Q || got < Q/2 {
		t.Fatalf("P(|N| > %v) = %.3g, want in (Q/2, Q] = (%.3g, %.3g]", Z, got, Q/2, Q)
	}
}
