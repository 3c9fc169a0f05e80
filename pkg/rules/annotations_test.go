package rules

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseAnnotations(t *testing.T) {
	const M = 1_000_000
	for _, tc := range []struct {
		name     string
		ann      map[string]string
		want     Policy
		wantErrs []string // keys, in order
	}{
		{name: "nil map", ann: nil},
		{name: "unrelated keys are ignored", ann: map[string]string{
			"foo": "bar", "kubeshaper.io/unknown": "x", "kubernetes.io/change-cause": "?",
		}},
		{
			name: "all kubeshaper keys combine",
			ann: map[string]string{
				KeyBandwidth: "10mbps egress; 100mbps ingress mode=pace",
				KeyLoss:      "uniform egress 2%",
				KeyDelay:     "80ms jitter=10ms ingress",
				KeyProgram:   "dropper egress DROP=1",
			},
			want: Policy{
				{
					Bandwidth: &Bandwidth{RateBitsPerSec: 10 * M, Mode: ModeDrop},
					Loss:      &Loss{Kind: LossUniform, Percent: 2},
					Program:   &Program{Name: "dropper", Params: []Param{{"DROP", "1"}}},
				},
				{
					Bandwidth: &Bandwidth{RateBitsPerSec: 100 * M, Mode: ModePace},
					Delay:     &Delay{Delay: 80 * time.Millisecond, Jitter: 10 * time.Millisecond},
				},
			},
		},
		{
			name: "standard keys",
			ann:  map[string]string{KeyEgressBandwidth: "10M", KeyIngressBandwidth: "1G"},
			want: Policy{bwp(10*M, 0, ModeDrop), bwp(1000*M, 0, ModeDrop)},
		},
		{
			name: "kubeshaper.io/bandwidth wins over the standard key of the same direction",
			ann: map[string]string{
				KeyBandwidth:        "5mbps egress mode=pace",
				KeyEgressBandwidth:  "10M",
				KeyIngressBandwidth: "20M",
			},
			want: Policy{bwp(5*M, 0, ModePace), bwp(20*M, 0, ModeDrop)},
		},
		{
			name: "an invalid kubeshaper.io/bandwidth leaves the standard key in force",
			ann:  map[string]string{KeyBandwidth: "5mbps egress mode=warp", KeyEgressBandwidth: "10M"},
			want: eg(bwp(10*M, 0, ModeDrop)), wantErrs: []string{KeyBandwidth},
		},
		{
			name: "one bad clause drops the whole key, other keys apply",
			ann:  map[string]string{KeyBandwidth: "10mbps egress; 5 ingress", KeyLoss: "uniform egress 2%"},
			want: eg(uniform(2)), wantErrs: []string{KeyBandwidth},
		},
		{
			name: "errors come sorted by key",
			ann: map[string]string{
				KeyProgram: "../x egress", KeyLoss: "uniform egress 0%", KeyDelay: "0s egress",
				KeyBandwidth: "10mbps", KeyIngressBandwidth: "lots", KeyEgressBandwidth: "1",
			},
			// Plain string order: kubernetes.io sorts before kubeshaper.io.
			wantErrs: []string{KeyEgressBandwidth, KeyIngressBandwidth, KeyBandwidth, KeyDelay, KeyLoss, KeyProgram},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseAnnotations(tc.ann)
			if !got.Equal(tc.want) {
				t.Errorf("policy\n got  %v\n want %v", got, tc.want)
			}
			var keys []string
			for _, e := range errs {
				keys = append(keys, e.Key)
				if e.Value != tc.ann[e.Key] || !strings.Contains(e.Error(), e.Key) {
					t.Errorf("error %q: wrong key/value", e)
				}
			}
			if strings.Join(keys, ",") != strings.Join(tc.wantErrs, ",") {
				t.Errorf("error keys %v, want %v", keys, tc.wantErrs)
			}
		})
	}
}

func TestStandardBandwidthKeys(t *testing.T) {
	for _, tc := range []struct {
		value   string
		want    uint64
		wantErr string
	}{
		{value: "10M", want: 10_000_000},
		{value: "1G", want: 1_000_000_000},
		{value: "100G", want: 100_000_000_000},
		{value: "8k", want: 8_000},
		{value: "1.5M", want: 1_500_000},
		{value: "10Mi", want: 10 << 20},
		{value: "5e6", want: 5_000_000},
		{value: " 10M\n", want: 10_000_000},
		{value: "8000.5", want: 8001}, // fractional bits round up, like the CNI plugin's Value()

		{value: "", wantErr: "not a quantity"},
		{value: "abc", wantErr: `"abc" is not a quantity of bits per second`},
		{value: "10 M", wantErr: "not a quantity"},
		{value: "10mbps", wantErr: "not a quantity"},
		{value: "0", wantErr: "out of range: want 8k to 100G"},
		{value: "-1M", wantErr: "out of range"},
		{value: "7999", wantErr: "out of range"},
		{value: "101G", wantErr: "out of range"},
		{value: "1e30", wantErr: "out of range"},
		{value: "100m", wantErr: "out of range"}, // milli-bits, a classic slip
		{value: "10M\x07", wantErr: "non-printable"},
		// ParseQuantity would spend minutes on these; they must fail at once.
		{value: "1E-999999999", wantErr: "exponent beyond ±99"},
		{value: "1e999999999", wantErr: "exponent beyond ±99"},
		{value: "1e99999999999999999999", wantErr: "exponent beyond ±99"},
		{value: "1e99", wantErr: "out of range"},
		{value: "1e-99", wantErr: "out of range"},
		{value: "1e+5", want: 100_000},
		{value: "10Ei", wantErr: "out of range"},
	} {
		for _, key := range []string{KeyEgressBandwidth, KeyIngressBandwidth} {
			d := Egress
			if key == KeyIngressBandwidth {
				d = Ingress
			}
			p, err := ParseValue(key, tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), key) {
					t.Errorf("%s=%q: error %v, want one containing %q and the key", key, tc.value, err, tc.wantErr)
				}
				continue
			}
			want := onDir(d, bwp(tc.want, 0, ModeDrop))
			if err != nil || !p.Equal(want) {
				t.Errorf("%s=%q: got %v, %v; want %v", key, tc.value, p, err, want)
			}
		}
	}
}

func TestAnnotationError(t *testing.T) {
	_, err := ParseValue(KeyLoss, "uniform egress 200%")
	var ae *AnnotationError
	if !errors.As(err, &ae) || ae.Key != KeyLoss || ae.Value != "uniform egress 200%" || ae.Err == nil {
		t.Fatalf("ParseValue error %#v is not a complete *AnnotationError", err)
	}
	const want = `invalid annotation kubeshaper.io/loss="uniform egress 200%": loss "200%" is out of range: want more than 0% and at most 100%`
	if err.Error() != want {
		t.Errorf("Error()\n got  %s\n want %s", err, want)
	}
	if errors.Unwrap(err) != ae.Err {
		t.Error("Unwrap does not give the cause")
	}

	// A huge value is quoted only in part, and its words are cut too.
	huge := strings.Repeat("x", 4000) + " egress"
	_, err = ParseValue(KeyDelay, huge)
	if err == nil || len(err.Error()) > 600 {
		t.Fatalf("error for a 4 KB value is %d bytes: %v", len(err.Error()), err)
	}
	if !strings.Contains(err.Error(), "(4007 bytes)") || !strings.Contains(err.Error(), KeyDelay) {
		t.Errorf("error does not say how long the value was or which key: %v", err)
	}
	_, err = ParseValue(KeyDelay, strings.Repeat("x", 5000))
	if err == nil || !strings.Contains(err.Error(), "5000 bytes, longer than the 4096-byte limit") || len(err.Error()) > 600 {
		t.Errorf("error for a 5 KB value: %v", err)
	}

	// Control characters come out escaped, not raw, in the message.
	_, err = ParseValue(KeyBandwidth, "10mbps\x1b[2J egress")
	if err == nil || strings.ContainsRune(err.Error(), 0x1b) || !strings.Contains(err.Error(), `\x1b`) {
		t.Errorf("control character not escaped: %q", err)
	}

	// The bound holds for the quoted form, where one invalid byte is "\x94".
	_, err = ParseValue(KeyBandwidth, strings.Repeat("\x94", 3000))
	if err == nil || len(err.Error()) > 400 || !strings.Contains(err.Error(), "invalid UTF-8") {
		t.Errorf("error for 3000 invalid bytes is %d bytes: %.100q", len(err.Error()), err)
	}

	// Multi-byte characters are not cut in half.
	_, err = ParseValue(KeyProgram, strings.Repeat("é", 300))
	if err == nil || !strings.Contains(err.Error(), "é") || strings.Contains(err.Error(), `\x`) {
		t.Errorf("truncation split a rune: %q", err)
	}
}

func TestParseValueUnknownKey(t *testing.T) {
	_, err := ParseValue("kubeshaper.io/bandwith", "10mbps egress")
	if err == nil || !strings.Contains(err.Error(), "unknown key") || !strings.Contains(err.Error(), `"kubeshaper.io/bandwith"`) {
		t.Errorf("unknown key: %v", err)
	}
}

func TestKeyForShortName(t *testing.T) {
	for short, want := range map[string]string{
		"bandwidth": KeyBandwidth, "loss": KeyLoss, "delay": KeyDelay, "program": KeyProgram, "Loss": KeyLoss,
	} {
		if got, ok := KeyForShortName(short); !ok || got != want {
			t.Errorf("KeyForShortName(%q) = %q, %v; want %q", short, got, ok, want)
		}
	}
	for _, short := range []string{"", "bw", "kubeshaper.io/loss", "egress-bandwidth"} {
		if got, ok := KeyForShortName(short); ok {
			t.Errorf("KeyForShortName(%q) = %q, want no match", short, got)
		}
	}
}
