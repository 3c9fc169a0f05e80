package rules

import (
	"errors"
	"strings"
	"testing"
)

// The fuzz targets check invariants that must hold for any input; their
// seed corpus is checked in under testdata/fuzz/. Run them with e.g.
//
//	go test ./pkg/rules -run '^$' -fuzz FuzzParseValue -fuzztime 1m

// fuzzKeys is indexed by the fuzzer's key byte; the last entry is a key the
// package does not know, which must always fail in ParseValue.
var fuzzKeys = append(AnnotationKeys(), "kubeshaper.io/unknown")

// maxErrorLen bounds Error() for any input: messages quote only a bounded
// part of the value, so a 4 KB value cannot make a 4 KB Event.
const maxErrorLen = 1024

func FuzzParseValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, keyIdx uint8, value string) {
		key := fuzzKeys[int(keyIdx)%len(fuzzKeys)]
		p, err := ParseValue(key, value)
		if err != nil {
			checkError(t, err, key, value)
			if !p.IsEmpty() {
				t.Fatalf("policy %v returned along with error %v", p, err)
			}
			return
		}
		if !isKnownKey(key) {
			t.Fatalf("unknown key %q accepted", key)
		}
		if p.IsEmpty() {
			t.Fatalf("%s=%q parsed to an empty policy", key, value)
		}
		checkValid(t, p)
		checkOnlyKind(t, key, p)
		checkRoundTrip(t, p)

		// ParseAnnotations agrees with ParseValue on a single key.
		pa, errs := ParseAnnotations(map[string]string{key: value})
		if len(errs) != 0 || !pa.Equal(p) {
			t.Fatalf("ParseAnnotations(%s=%q) = %v, %v; ParseValue gave %v", key, value, pa, errs, p)
		}
	})
}

func FuzzParseAnnotations(f *testing.F) {
	f.Fuzz(func(t *testing.T, present uint8, bw, loss, delay, prog, egress, ingress, dup, corrupt string) {
		values := map[string]string{
			KeyBandwidth: bw, KeyLoss: loss, KeyDelay: delay, KeyProgram: prog,
			KeyEgressBandwidth: egress, KeyIngressBandwidth: ingress,
			KeyDuplicate: dup, KeyCorrupt: corrupt,
		}
		ann := map[string]string{"unrelated/key": bw + loss}
		for i, key := range AnnotationKeys() {
			if present&(1<<i) != 0 {
				ann[key] = values[key]
			}
		}
		p, errs := ParseAnnotations(ann)

		// Errors: sorted, one per bad key, each naming its key and value.
		failed := map[string]bool{}
		for i, e := range errs {
			if i > 0 && errs[i-1].Key >= e.Key {
				t.Fatalf("errors not sorted by key or duplicated: %q then %q", errs[i-1].Key, e.Key)
			}
			v, ok := ann[e.Key]
			if !ok || !isKnownKey(e.Key) || e.Value != v {
				t.Fatalf("error for key %q value %q not in the annotations", e.Key, e.Value)
			}
			checkError(t, e, e.Key, v)
			failed[e.Key] = true
		}

		// Each key is applied whole or not at all, independently of the
		// others: the result is exactly what the valid keys say.
		var want Policy
		for _, key := range AnnotationKeys() {
			v, ok := ann[key]
			if !ok {
				continue
			}
			kp, err := ParseValue(key, v)
			if (err != nil) != failed[key] {
				t.Fatalf("%s=%q: ParseValue error %v, ParseAnnotations failed=%v", key, v, err, failed[key])
			}
			for _, d := range Directions {
				// AnnotationKeys lists kubeshaper.io/bandwidth before the
				// standard keys, so filling in that order is the precedence.
				want[d].fillFrom(kp[d])
			}
		}
		if !p.Equal(want) {
			t.Fatalf("ParseAnnotations(%q)\n got  %v\n want %v", ann, p, want)
		}
		checkValid(t, p)
		checkRoundTrip(t, p)
	})
}

func checkError(t *testing.T, err error, key, value string) {
	t.Helper()
	var ae *AnnotationError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is a %T, not *AnnotationError", err, err)
	}
	if ae.Key != key || ae.Value != value || ae.Err == nil {
		t.Fatalf("AnnotationError{%q, %q, %v} for key %q value %q", ae.Key, ae.Value, ae.Err, key, value)
	}
	msg := err.Error()
	if isKnownKey(key) && !strings.Contains(msg, key) {
		t.Fatalf("error %q does not name the key %s", msg, key)
	}
	if len(msg) > maxErrorLen {
		t.Fatalf("error is %d bytes long: %.300q…", len(msg), msg)
	}
}

// checkValid asserts that every rule is within the grammar's limits, which
// is what the datapath relies on.
func checkValid(t *testing.T, p Policy) {
	t.Helper()
	for _, d := range Directions {
		dp := p[d]
		if b := dp.Bandwidth; b != nil {
			if b.RateBitsPerSec < MinRateBitsPerSec || b.RateBitsPerSec > MaxRateBitsPerSec ||
				(b.BurstBytes != 0 && (b.BurstBytes < MinBurstBytes || b.BurstBytes > MaxBurstBytes)) ||
				(b.Mode != ModeDrop && b.Mode != ModePace && b.Mode != ModeTBF) ||
				(b.Mode == ModeTBF && !b.Target.IsZero()) {
				t.Fatalf("%s: invalid bandwidth %+v", d, *b)
			}
			checkTarget(t, d, b.Target)
		}
		if l := dp.Loss; l != nil {
			g := l.Gilbert
			inRange := func(v float64) bool { return v >= 0 && v <= 100 }
			ok := (l.Kind == LossUniform && l.Percent > 0 && l.Percent <= 100 && l.Threshold == 0 && g == Gilbert{}) ||
				(l.Kind == LossExponential && l.Threshold <= MaxLossThreshold && l.Percent == 0 && g == Gilbert{}) ||
				(l.Kind == LossGilbert && l.Percent == 0 && l.Threshold == 0 && g.P > 0 && inRange(g.P) && inRange(g.R) && inRange(g.H) && inRange(g.K))
			if !ok {
				t.Fatalf("%s: invalid loss %+v", d, *l)
			}
			// A Gilbert model may lose nothing (h = k = 100%).
			if p := l.Probability(); !(p > 0 || (l.Kind == LossGilbert && p == 0)) || p > 1 || l.Threshold32() > 1<<32 {
				t.Fatalf("%s: loss %+v has probability %v, threshold %d", d, *l, p, l.Threshold32())
			}
			checkTarget(t, d, l.Target)
		}
		if dd := dp.Duplicate; dd != nil {
			if !(dd.Percent > 0 && dd.Percent <= 100) {
				t.Fatalf("%s: invalid duplicate %+v", d, *dd)
			}
			checkTarget(t, d, dd.Target)
		}
		if c := dp.Corrupt; c != nil {
			if !(c.Percent > 0 && c.Percent <= 100) {
				t.Fatalf("%s: invalid corrupt %+v", d, *c)
			}
			checkTarget(t, d, c.Target)
		}
		if len(dp.Targets()) > 5 {
			t.Fatalf("%s: %d targets, the datapath holds 5", d, len(dp.Targets()))
		}
		if dl := dp.Delay; dl != nil {
			if dl.Delay <= 0 || dl.Delay > MaxDelay || dl.Jitter < 0 || dl.Jitter > dl.Delay {
				t.Fatalf("%s: invalid delay %+v", d, *dl)
			}
			checkTarget(t, d, dl.Target)
		}
		if pr := dp.Program; pr != nil {
			if !programNameRE.MatchString(pr.Name) || len(pr.Params) > MaxProgramParams {
				t.Fatalf("%s: invalid program %+v", d, *pr)
			}
			for i, prm := range pr.Params {
				if err := checkParam(pr.Params[:i], prm.Name, prm.Value); err != nil {
					t.Fatalf("%s: program %+v: %v", d, *pr, err)
				}
			}
		}
	}
}

// checkTarget asserts what the datapath relies on in a target.
func checkTarget(t *testing.T, d Direction, tg Target) {
	t.Helper()
	if int(tg.nPeers) > MaxTargetPeers || int(tg.nPorts) > MaxTargetPorts {
		t.Fatalf("%s: target %+v over its limits", d, tg)
	}
	for _, p := range tg.Peers() {
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("%s: target peer %v is not a canonical prefix", d, p)
		}
	}
	for _, r := range tg.Ports() {
		if r.Lo == 0 || r.Lo > r.Hi {
			t.Fatalf("%s: target port range %+v", d, r)
		}
	}
	switch tg.Proto {
	case ProtoAny, ProtoTCP, ProtoUDP, ProtoSCTP:
	case ProtoICMP:
		if tg.nPorts > 0 {
			t.Fatalf("%s: ports with ICMP: %+v", d, tg)
		}
	default:
		t.Fatalf("%s: target protocol %q", d, tg.Proto)
	}
	if s := tg.Service; s.Name != "" && !serviceRE.MatchString(s.Name) || s.Namespace != "" && !namespaceRE.MatchString(s.Namespace) {
		t.Fatalf("%s: target Service %+v", d, s)
	}
}

// checkOnlyKind asserts that a key sets only its own kind of rule.
func checkOnlyKind(t *testing.T, key string, p Policy) {
	t.Helper()
	for _, d := range Directions {
		dp := p[d]
		other := dp
		switch key {
		case KeyBandwidth, KeyEgressBandwidth, KeyIngressBandwidth:
			other.Bandwidth = nil
		case KeyLoss:
			other.Loss = nil
		case KeyDelay:
			other.Delay = nil
		case KeyProgram:
			other.Program = nil
		case KeyDuplicate:
			other.Duplicate = nil
		case KeyCorrupt:
			other.Corrupt = nil
		}
		if !other.IsEmpty() {
			t.Fatalf("%s set other kinds of rule: %v", key, p)
		}
	}
	if (key == KeyEgressBandwidth && !p[Ingress].IsEmpty()) || (key == KeyIngressBandwidth && !p[Egress].IsEmpty()) {
		t.Fatalf("%s set the other direction: %v", key, p)
	}
}

// checkRoundTrip asserts that the canonical rendering parses back to an
// Equal policy and is a fixed point, and that String does not fail.
func checkRoundTrip(t *testing.T, p Policy) {
	t.Helper()
	ann := p.Annotations()
	back, errs := ParseAnnotations(ann)
	if len(errs) != 0 {
		t.Fatalf("canonical form %q of %v does not parse: %v", ann, p, errs)
	}
	if !back.Equal(p) {
		t.Fatalf("canonical form %q parses to %v, want %v", ann, back, p)
	}
	again := back.Annotations()
	for k, v := range ann {
		if again[k] != v {
			t.Fatalf("canonical form not stable: %q then %q", ann, again)
		}
	}
	if s := p.String(); s == "" || (s == "none") != p.IsEmpty() {
		t.Fatalf("String() = %q for %#v", s, p)
	}
}
