package rules

import (
	"strings"
	"testing"
)

// Builders for expected policies.

func onDir(d Direction, dp DirectionPolicy) Policy {
	var p Policy
	p[d] = dp
	return p
}

func eg(dp DirectionPolicy) Policy   { return onDir(Egress, dp) }
func ing(dp DirectionPolicy) Policy  { return onDir(Ingress, dp) }
func both(dp DirectionPolicy) Policy { return Policy{dp.Clone(), dp.Clone()} }

func bwp(rate, burst uint64, mode BandwidthMode) DirectionPolicy {
	return DirectionPolicy{Bandwidth: &Bandwidth{RateBitsPerSec: rate, BurstBytes: burst, Mode: mode}}
}

func uniform(pct float64) DirectionPolicy {
	return DirectionPolicy{Loss: &Loss{Kind: LossUniform, Percent: pct}}
}

func expo(t uint32) DirectionPolicy {
	return DirectionPolicy{Loss: &Loss{Kind: LossExponential, Threshold: t}}
}

func prog(name string, kv ...string) DirectionPolicy {
	p := &Program{Name: name}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Params = append(p.Params, Param{Name: kv[i], Value: kv[i+1]})
	}
	return DirectionPolicy{Program: p}
}

// valueCase is one row of a grammar table: a value and either the policy
// it must give or a fragment its error must contain.
type valueCase struct {
	value   string
	want    Policy
	wantErr string
}

func runValueCases(t *testing.T, key string, cases []valueCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			got, err := ParseValue(key, tc.value)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseValue(%q) = %v, want error containing %q", tc.value, got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseValue(%q) error %q does not contain %q", tc.value, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), key) {
					t.Fatalf("error %q does not name the key %s", err, key)
				}
				if !got.IsEmpty() {
					t.Fatalf("ParseValue(%q) returned %v with an error", tc.value, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseValue(%q): %v", tc.value, err)
			}
			if !got.Equal(tc.want) {
				t.Fatalf("ParseValue(%q)\n got  %v\n want %v", tc.value, got, tc.want)
			}
			// The canonical rendering must read back the same.
			back, errs := ParseAnnotations(got.Annotations())
			if len(errs) != 0 || !back.Equal(got) {
				t.Fatalf("round trip of %q via %q: got %v, errors %v", tc.value, got.Annotations(), back, errs)
			}
		})
	}
}
