package guest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Delay: the added round-trip time of UDP echo probes (one way shaped)
// must be the asked delay within ±5 %, and with jitter the spread of the
// delays (uniform in [delay-jitter, delay+jitter]) must span ±jitter
// within ±10 %. The base RTT (no rule) is measured right before each
// measurement (the load of a shared host drifts) and subtracted.
//
// Robust statistics, not means and extremes: a TCG guest on a busy host
// stalls now and then for tens of milliseconds, which only ever adds to an
// RTT and says nothing about the delay kubeshaper adds (the extremes are
// logged). Without jitter the added delay is the 10th percentile of the
// RTTs less that of the base; with jitter (uniform delays) it is the
// median less the base's, and the spread is the 10th…90th percentile
// range, which covers 80 % of the uniform width.
const (
	delayTolerance  = 0.05
	jitterTolerance = 0.10
	probes          = 300
	probeInterval   = 5 * time.Millisecond
)

var delayCases = []rules.Delay{
	{Delay: 20 * time.Millisecond},
	{Delay: 100 * time.Millisecond},
	{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond},
}

// shortDelayCases: -short (CI's per-kernel run): a plain delay and one
// with jitter.
var shortDelayCases = []rules.Delay{delayCases[0], delayCases[2]}

func TestDelayRTT(t *testing.T) {
	f := setup(t)
	ifc := f.Iface(t, f.A)
	server := echoServer(t, f.A) // probes b → a, answers a → b

	// baseRTT measures the round trip without a rule.
	baseRTT := func(t *testing.T) stats {
		t.Helper()
		f.apply(t, ifc, rules.Policy{})
		rtts, lost := probeRTTs(t, f.B, server, probes/3, probeInterval, time.Second)
		base, err := summarize(rtts)
		if err != nil || lost > 0 {
			t.Fatalf("base RTT: %d answers, %d lost (%v)", len(rtts), lost, err)
		}
		return base
	}

	for _, dir := range rules.Directions {
		cases := delayCases
		if testing.Short() {
			cases = shortDelayCases
		}
		for _, c := range cases {
			name := fmt.Sprintf("%s/%v", dir, c.Delay)
			if c.Jitter > 0 {
				name += fmt.Sprintf("±%v", c.Jitter)
			}
			t.Run(name, func(t *testing.T) {
				var pol rules.Policy
				pol[dir].Delay = &c
				if err := f.apply(t, ifc, pol); err == errNotYet {
					t.Skipf("delay on pod %s: pkg/shaper says not supported yet", dir)
				}
				defer f.apply(t, ifc, rules.Policy{})
				retry(t, func(try int) (string, string) {
					base := baseRTT(t)
					f.apply(t, ifc, pol)
					rtts, lost := probeRTTs(t, f.B, server, probes, probeInterval, c.Delay+c.Jitter+time.Second)
					s, err := summarize(rtts)
					if err != nil {
						t.Fatal(err)
					}
					added, what := s.p10-base.p10, "p10"
					if c.Jitter > 0 {
						added, what = s.median-base.median, "median"
					}
					e := float64(added)/float64(c.Delay) - 1
					fig := fmt.Sprintf("delay %s: added %.2f ms (%+.1f%%; RTT %s %.2f ms, base %.2f)",
						name, ms(added), 100*e, what, ms(added+base.p10), ms(base.p10))
					if c.Jitter > 0 {
						fig = fmt.Sprintf("delay %s: added %.2f ms (%+.1f%%; RTT %s %.2f ms, base %.2f)",
							name, ms(added), 100*e, what, ms(s.median), ms(base.median))
					}
					var problems []string
					if c.Jitter > 0 {
						spread := time.Duration(float64(s.p90-s.p10) / 2 / 0.8)
						je := float64(spread)/float64(c.Jitter) - 1
						fig += fmt.Sprintf(", spread ±%.2f ms (%+.1f%%)", ms(spread), 100*je)
						if je > jitterTolerance || je < -jitterTolerance {
							problems = append(problems, fmt.Sprintf("jitter spread not ±%v within %.0f %%", c.Jitter, 100*jitterTolerance))
						}
					}
					fig += fmt.Sprintf("; min %.2f, median %.2f, max %.2f, %d lost", ms(s.min), ms(s.median), ms(s.max), lost)
					if e > delayTolerance || e < -delayTolerance {
						problems = append(problems, fmt.Sprintf("added delay not %v within %.0f %%", c.Delay, 100*delayTolerance))
					}
					if lost > probes/100 {
						problems = append(problems, fmt.Sprintf("%d of %d probes lost", lost, probes))
					}
					// EDT never releases early: no probe may beat delay-jitter.
					if s.min < c.Delay-c.Jitter {
						problems = append(problems, fmt.Sprintf("a probe took %.2f ms, less than the minimum delay", ms(s.min)))
					}
					return fig, strings.Join(problems, "; ")
				})
			})
		}
	}
}
