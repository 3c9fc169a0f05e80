package rules

import (
	"math"
	"testing"
)

func TestParseLoss(t *testing.T) {
	runValueCases(t, KeyLoss, []valueCase{
		{value: "uniform egress 2%", want: eg(uniform(2))},
		{value: "uniform ingress 0.05%", want: ing(uniform(0.05))},
		{value: "egress uniform 2%", want: eg(uniform(2))},
		{value: "uniform egress 2", want: eg(uniform(2))},
		{value: "Uniform EGRESS 2 %", want: eg(uniform(2))},
		{value: "uniform both 100%", want: both(uniform(100))},
		{value: "uniform egress 1e-3%", want: eg(uniform(0.001))},
		{value: "exponential egress 300", want: eg(expo(300))},
		{value: "egress exponential 0", want: eg(expo(0))},
		{value: "exponential ingress 1000", want: ing(expo(1000))},
		{value: "exponential egress 300.0", want: eg(expo(300))},
		{value: "exponential egress 3e2", want: eg(expo(300))},
		{value: "uniform egress 2%; exponential ingress 300", want: Policy{uniform(2), expo(300)}},

		{value: "egress 2%", wantErr: "no distribution"},
		{value: "gaussian egress 2%", wantErr: `unknown distribution "gaussian"`},
		{value: "uniform 2%", wantErr: "no direction"},
		{value: "uniform egress", wantErr: "no loss percentage"},
		{value: "exponential egress", wantErr: "no threshold"},
		{value: "uniform egress 0%", wantErr: "out of range: want more than 0% and at most 100%"},
		{value: "uniform egress 0", wantErr: "out of range"},
		{value: "uniform egress 100.1%", wantErr: "out of range"},
		{value: "uniform egress -1%", wantErr: "out of range"},
		{value: "uniform egress 1e400%", wantErr: "out of range"},
		{value: "uniform egress 2%%", wantErr: "not a percentage"},
		{value: "uniform egress abc", wantErr: "not a percentage"},
		{value: "uniform egress nan%", wantErr: "not a percentage"},
		{value: "uniform egress 0.5p", wantErr: "not a percentage"},
		{value: "exponential egress 1001", wantErr: "out of range: want 0 to 1000"},
		{value: "exponential egress -1", wantErr: "out of range"},
		{value: "exponential egress 1e400", wantErr: "out of range"},
		{value: "exponential egress 300.5", wantErr: "not a whole number"},
		{value: "exponential egress 300%", wantErr: "not a number"},
		{value: "exponential egress inf", wantErr: "not a number"},
		{value: "uniform exponential egress 2", wantErr: "second distribution"},
		{value: "uniform egress 2% 3%", wantErr: "unexpected word"},
		{value: "uniform egress ingress 2%", wantErr: "second direction"},
		{value: "uniform egress 2%; uniform egress 3%", wantErr: "sets egress again"},
		{value: "uniform both 2%; exponential egress 3", wantErr: "sets egress again"},
	})
}

func TestLossProbabilityExact(t *testing.T) {
	// e^(-t/100), from an independent computation (Python's math.exp).
	want := map[uint32]float64{
		0:    1,
		50:   0.6065306597126334,
		100:  0.36787944117144233,
		300:  0.049787068367863944,
		700:  0.0009118819655545162,
		1000: 4.5399929762484854e-05,
	}
	for tt, w := range want {
		got := Loss{Kind: LossExponential, Threshold: tt}.Probability()
		if got != math.Exp(-float64(tt)/100) {
			t.Errorf("t=%d: Probability() = %v, not math.Exp(-t/100) = %v", tt, got, math.Exp(-float64(tt)/100))
		}
		if math.Abs(got-w) > w*1e-15 {
			t.Errorf("t=%d: Probability() = %v, want e^(-t/100) = %v", tt, got, w)
		}
	}
	for pct, w := range map[float64]float64{2: 0.02, 0.05: 0.0005, 100: 1} {
		if got := (Loss{Kind: LossUniform, Percent: pct}).Probability(); got != w {
			t.Errorf("uniform %v%%: Probability() = %v, want %v", pct, got, w)
		}
	}
}

func TestThreshold32(t *testing.T) {
	const full = uint64(1) << 32
	for _, tc := range []struct {
		name string
		loss Loss
		want uint64
	}{
		{"uniform 100% always drops", Loss{Kind: LossUniform, Percent: 100}, full},
		{"exponential t=0 always drops", Loss{Kind: LossExponential, Threshold: 0}, full},
		{"uniform 50%", Loss{Kind: LossUniform, Percent: 50}, full / 2},
		{"uniform 2% rounds 85899345.92 up", Loss{Kind: LossUniform, Percent: 2}, 85899346},
		{"exponential t=50", Loss{Kind: LossExponential, Threshold: 50}, 2605029347},
		{"exponential t=100", Loss{Kind: LossExponential, Threshold: 100}, 1580030169},
		{"exponential t=300", Loss{Kind: LossExponential, Threshold: 300}, 213833830},
		{"exponential t=700", Loss{Kind: LossExponential, Threshold: 700}, 3916503},
		{"exponential t=1000", Loss{Kind: LossExponential, Threshold: 1000}, 194991},
		{"below half a step rounds to never", Loss{Kind: LossUniform, Percent: 1e-12}, 0},
		{"one step", Loss{Kind: LossUniform, Percent: 100.0 / (1 << 32)}, 1},
		{"over 100% (not from the parser) clamps", Loss{Kind: LossUniform, Percent: 250}, full},
		{"negative clamps to never", Loss{Kind: LossUniform, Percent: -5}, 0},
		{"NaN never drops", Loss{Kind: LossUniform, Percent: math.NaN()}, 0},
		{"+Inf clamps", Loss{Kind: LossUniform, Percent: math.Inf(1)}, full},
		{"unknown kind never drops", Loss{Kind: "pareto", Percent: 50}, 0},
		{"zero value never drops", Loss{}, 0},
		{"huge exponential threshold (not from the parser)", Loss{Kind: LossExponential, Threshold: math.MaxUint32}, 0},
	} {
		if got := tc.loss.Threshold32(); got != tc.want {
			t.Errorf("%s: Threshold32() = %d, want %d", tc.name, got, tc.want)
		}
	}
}
