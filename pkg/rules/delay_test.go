package rules

import (
	"testing"
	"time"
)

func dl(d, j time.Duration) DirectionPolicy {
	return DirectionPolicy{Delay: &Delay{Delay: d, Jitter: j}}
}

func TestParseDelay(t *testing.T) {
	ms := time.Millisecond
	runValueCases(t, KeyDelay, []valueCase{
		{value: "50ms egress", want: eg(dl(50*ms, 0))},
		{value: "80ms jitter=10ms ingress", want: ing(dl(80*ms, 10*ms))},
		{value: "50 ms egress", want: eg(dl(50*ms, 0))},
		{value: "1.5ms egress", want: eg(dl(1500*time.Microsecond, 0))},
		{value: "2s both", want: both(dl(2*time.Second, 0))},
		{value: "10s egress", want: eg(dl(10*time.Second, 0))},
		{value: "1ns egress", want: eg(dl(1, 0))},
		{value: "500us egress", want: eg(dl(500*time.Microsecond, 0))},
		{value: "500µs egress", want: eg(dl(500*time.Microsecond, 0))},
		{value: "50MS Egress", want: eg(dl(50*ms, 0))},
		{value: "egress 50ms jitter = 50ms", want: eg(dl(50*ms, 50*ms))},
		{value: "jitter=0 50ms egress", want: eg(dl(50*ms, 0))},
		{value: "1s500ms egress jitter=1 ms", want: eg(dl(1500*ms, ms))},
		{value: "50ms egress; 80ms jitter=10ms ingress", want: Policy{dl(50*ms, 0), dl(80*ms, 10*ms)}},

		{value: "0ms egress", wantErr: "out of range: want more than 0 and at most 10s"},
		{value: "0 egress", wantErr: "out of range"},
		{value: "-5ms egress", wantErr: "out of range"},
		{value: "10.001s egress", wantErr: "out of range"},
		{value: "1m egress", wantErr: "out of range"},
		{value: "1h egress", wantErr: "out of range"},
		{value: "50 egress", wantErr: "not a duration"},
		{value: "fifty egress", wantErr: "not a duration"},
		{value: "9999999999999999999h egress", wantErr: "not a duration"},
		{value: "50ms", wantErr: "no direction"},
		{value: "egress", wantErr: "no delay"},
		{value: "egress jitter=1ms", wantErr: "no delay"},
		{value: "50ms egress jitter=60ms", wantErr: "jitter 60ms is out of range: want 0 up to the delay (50ms)"},
		{value: "50ms egress jitter=-1ms", wantErr: "jitter -1ms is out of range"},
		{value: "50ms egress jitter=abc", wantErr: `jitter "abc" is not a duration`},
		{value: "50ms egress spread=1ms", wantErr: `unknown option "spread="`},
		{value: "50ms egress jitter=1ms jitter=2ms", wantErr: "jitter= given twice"},
		{value: "50ms 60ms egress", wantErr: "unexpected word"},
		{value: "50ms egress; 60ms egress", wantErr: "sets egress again"},
	})
}
