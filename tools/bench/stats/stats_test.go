package stats

import (
	"math"
	"testing"
)

func TestQuantilesAndMedian(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	if got := Median(v); got != 3 {
		t.Errorf("median %v, want 3", got)
	}
	if got := Median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("even median %v, want 2.5", got)
	}
	if got := Percentile(v, 95); got != 5 {
		t.Errorf("p95 %v, want 5 (nearest rank)", got)
	}
	if got := Percentile(v, 0); got != 1 {
		t.Errorf("p0 %v, want 1", got)
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Percentile(nil, 50)) {
		t.Error("no values: NaN")
	}
	if v[0] != 5 {
		t.Error("the input was reordered")
	}
}

// With 20 values the 95 % interval of the median is the 6th to 15th order
// statistic (P(Bin(20,½) ≤ 5) = 0.021 ≤ 0.025 < P(≤ 6) = 0.058).
func TestMedianCI(t *testing.T) {
	s := make([]float64, 20)
	for i := range s {
		s[i] = float64(i + 1)
	}
	if got := MedianCI(s); got != [2]float64{6, 15} {
		t.Fatalf("CI %v, want [6 15]", got)
	}
	if got := MedianCI([]float64{1, 2, 3}); got != [2]float64{1, 3} {
		t.Fatalf("3 values: %v, want the range", got)
	}
}
