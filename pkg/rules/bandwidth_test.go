package rules

import (
	"strings"
	"testing"
)

func TestParseBandwidth(t *testing.T) {
	const (
		k = 1000
		M = 1000 * k
		G = 1000 * M
	)
	runValueCases(t, KeyBandwidth, []valueCase{
		// The forms of the design card and of the ELTE prototype's annotations.
		{value: "10mbps egress", want: eg(bwp(10*M, 0, ModeDrop))},
		{value: "10 mbps egress", want: eg(bwp(10*M, 0, ModeDrop))},
		{value: "1gbit ingress burst=64kb", want: ing(bwp(G, 64*k, ModeDrop))},
		{value: "5mbps both mode=pace", want: both(bwp(5*M, 0, ModePace))},
		{value: "100mbit egress mode=tbf", want: eg(bwp(100*M, 0, ModeTBF))},
		// Case, whitespace, order.
		{value: "10 Mbps EGRESS", want: eg(bwp(10*M, 0, ModeDrop))},
		{value: "egress 10mbps", want: eg(bwp(10*M, 0, ModeDrop))},
		{value: "  mode = PACE\t10MBIT   egress\n", want: eg(bwp(10*M, 0, ModePace))},
		{value: "1gbit ingress burst = 64 kib", want: ing(bwp(G, 65536, ModeDrop))},
		{value: "10mbps egress; 100mbps ingress", want: Policy{bwp(10*M, 0, ModeDrop), bwp(100*M, 0, ModeDrop)}},
		{value: "10mbps egress;\n100mbps ingress;\n", want: Policy{bwp(10*M, 0, ModeDrop), bwp(100*M, 0, ModeDrop)}},
		// Rate units: all bits, decimal.
		{value: "8000bps egress", want: eg(bwp(8*k, 0, ModeDrop))},
		{value: "8000bit egress", want: eg(bwp(8*k, 0, ModeDrop))},
		{value: "8kbit egress", want: eg(bwp(8*k, 0, ModeDrop))},
		{value: "8kbps egress", want: eg(bwp(8*k, 0, ModeDrop))},
		{value: "3mbit egress", want: eg(bwp(3*M, 0, ModeDrop))},
		{value: "2gbps egress", want: eg(bwp(2*G, 0, ModeDrop))},
		{value: "100gbit egress", want: eg(bwp(100*G, 0, ModeDrop))},
		{value: "1.5gbit egress", want: eg(bwp(1500*M, 0, ModeDrop))},
		{value: "0.5mbit egress", want: eg(bwp(500*k, 0, ModeDrop))},
		{value: ".5mbit egress", want: eg(bwp(500*k, 0, ModeDrop))},
		{value: "1.1mbit egress", want: eg(bwp(1100*k, 0, ModeDrop))},
		{value: "1e3kbit egress", want: eg(bwp(M, 0, ModeDrop))},
		{value: "+10mbps egress", want: eg(bwp(10*M, 0, ModeDrop))},
		// Burst units: decimal and binary bytes, bare bytes, auto.
		{value: "1gbit egress burst=1500", want: eg(bwp(G, 1500, ModeDrop))},
		{value: "1gbit egress burst=1500b", want: eg(bwp(G, 1500, ModeDrop))},
		{value: "1gbit egress burst=1.5kb", want: eg(bwp(G, 1500, ModeDrop))},
		{value: "1gbit egress burst=2mb", want: eg(bwp(G, 2*M, ModeDrop))},
		{value: "1gbit egress burst=1gb", want: eg(bwp(G, G, ModeDrop))},
		{value: "1gbit egress burst=1.5kib", want: eg(bwp(G, 1536, ModeDrop))},
		{value: "1gbit egress burst=1mib", want: eg(bwp(G, 1<<20, ModeDrop))},
		{value: "1gbit egress burst=1GiB", want: eg(bwp(G, 1<<30, ModeDrop))},
		{value: "1gbit egress burst=0", want: eg(bwp(G, 0, ModeDrop))},
		{value: "1gbit egress burst=auto", want: eg(bwp(G, 0, ModeDrop))},
		{value: "1gbit egress burst=64kb mode=drop", want: eg(bwp(G, 64*k, ModeDrop))},

		{value: "", wantErr: "empty value"},
		{value: " ; \n ;", wantErr: "empty value"},
		{value: "10mbps", wantErr: "no direction"},
		{value: "egress", wantErr: "no rate"},
		{value: "egress burst=64kb", wantErr: "no rate"},
		{value: "10 egress", wantErr: "has no unit"},
		{value: "10mbps sideways", wantErr: `unexpected word "sideways"`},
		{value: "10furlongs egress", wantErr: `unknown unit "furlongs"`},
		{value: "10MBps/s egress", wantErr: "unknown unit"},
		{value: "fast egress", wantErr: "not a number with a unit"},
		{value: "nanbps egress", wantErr: "not a number with a unit"},
		{value: "infgbit egress", wantErr: "not a number with a unit"},
		{value: "0x10mbps egress", wantErr: "unknown unit"},
		{value: "0mbps egress", wantErr: "8kbit to 100gbit"},
		{value: "-10mbps egress", wantErr: "out of range"},
		{value: "7999bit egress", wantErr: "out of range"},
		{value: "7.9kbit egress", wantErr: "out of range"},
		{value: "101gbit egress", wantErr: "out of range"},
		{value: "1e30gbit egress", wantErr: "8kbit to 100gbit"},
		{value: "1e999bit egress", wantErr: "out of range"},
		{value: "10mbps egress ingress", wantErr: "second direction"},
		{value: "10mbps 20mbps egress", wantErr: "unexpected word"},
		{value: "10mbps egress; 20mbps egress", wantErr: "sets egress again"},
		{value: "10mbps both; 20mbps ingress", wantErr: "sets ingress again"},
		{value: "10mbps egress; bogus", wantErr: "clause 2"},
		{value: "10mbps egress burst=1kb", wantErr: "burst \"1kb\" is out of range"},
		{value: "10mbps egress burst=2gib", wantErr: "1500 bytes to 1gib"},
		{value: "10mbps egress burst=-5kb", wantErr: "out of range"},
		{value: "10mbps egress burst=64xb", wantErr: `unknown unit "xb"`},
		{value: "10mbps egress burst=big", wantErr: "not a size"},
		{value: "10mbps egress burst=", wantErr: "has no value"},
		{value: "10mbps egress burst=64kb burst=64kb", wantErr: "burst= given twice"},
		{value: "10mbps egress mode=fast", wantErr: `unknown mode "fast"`},
		{value: "10mbps egress mode=pace mode=drop", wantErr: "mode= given twice"},
		{value: "rate=10mbps egress", wantErr: `unknown option "rate="`},
		{value: "=5 10mbps egress", wantErr: "no option name"},
		{value: "10mbps egress =5", wantErr: `unknown option "egress="`},
		{value: "10mbps\x00 egress", wantErr: "non-printable character U+0000 at byte 6"},
		{value: "10mbps\u00a0egress", wantErr: "non-printable character U+00A0"},
		{value: "10mbps \x1b[31megress", wantErr: "non-printable"},
		{value: "10mbps \xff egress", wantErr: "invalid UTF-8 at byte 7"},
		{value: strings.Repeat(" ", 4090) + "10mbps egress", wantErr: "longer than the 4096-byte limit"},
	})
}

func TestFormatUnits(t *testing.T) {
	for bits, want := range map[uint64]string{
		8000: "8kbit", 8001: "8001bit", 10_000_000: "10mbit", 1_500_000_000: "1500mbit",
		100_000_000_000: "100gbit", 1_100_000: "1100kbit",
	} {
		if got := formatRate(bits); got != want {
			t.Errorf("formatRate(%d) = %q, want %q", bits, got, want)
		}
	}
	for b, want := range map[uint64]string{
		1500: "1500b", 64000: "64kb", 65536: "64kib", 1 << 30: "1gib", 1_000_000_000: "1gb",
		2_048_000: "2000kib", 3_000_000: "3mb", 5 << 20: "5mib",
	} {
		if got := formatSize(b); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", b, got, want)
		}
	}
}

func TestFormatMeasured(t *testing.T) {
	for bits, want := range map[float64]string{
		51.83e6: "51.8mbit", 1.2e9: "1.2gbit", 950: "950bit", 8000: "8kbit", 999.6e3: "1mbit",
	} {
		if got := FormatMeasured(bits); got != want {
			t.Errorf("FormatMeasured(%g) = %q, want %q", bits, got, want)
		}
	}
}
