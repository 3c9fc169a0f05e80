package datapath_test

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// FuzzDesiredToDatapath follows hostile annotations from a pod and a
// Service selecting it, through the agent's pure policy computation
// (DesiredFor), into the map values the datapath would be given
// (datapath.ConfigFor), without a kernel. It holds that
//   - nothing panics;
//   - what the grammar accepts, the datapath accepts: a valid annotation
//     never turns into an ApplyFailed at apply time;
//   - the map value says what the policy says (rate, loss threshold, delay),
//     and reads back as the Config it was written from.
//
// It lives with the conversion it checks: pkg/reconcile reaches the
// datapath only through pkg/shaper.
//   - an invalid key contributes nothing: the kinds it would set come only
//     from the other object (pod or Service), and its error is reported,
//     bounded in size.
//
// make fuzz runs it for FUZZTIME (CI: 1 min), make fuzz-long for longer.
func FuzzDesiredToDatapath(f *testing.F) {
	f.Add(uint16(0xfff), "10mbit egress", "uniform ingress 2%", "50ms egress", "10M", "5mbit both", "exponential egress 300", "", "1G")
	f.Add(uint16(0x0ff), "1gbit ingress burst=64kb", "uniform egress 0.05%", "80ms jitter=10ms ingress", "1e30", "0mbit egress", "uniform egress NaN%", "-5ms egress", "-1")
	f.Add(uint16(0xf0f), "10mbit egress; 100mbit ingress", "", "", "", "5mbps both mode=pace", "uniform both 1%", "10ms both", "")
	f.Add(uint16(0xfff), "１０mbit egress", "uniform egress 1e30%", "NaNms egress", "NaN", "10mbit \u202eegress", "\x00", "\xff", "999999999999999999999999Ei")
	f.Fuzz(func(t *testing.T, present uint16, podBW, podLoss, podDelay, podK8s, svcBW, svcLoss, svcDelay, svcK8s string) {
		keys := []string{rules.KeyBandwidth, rules.KeyLoss, rules.KeyDelay, rules.KeyEgressBandwidth}
		podAnn, svcAnn := map[string]string{}, map[string]string{}
		for i, v := range []string{podBW, podLoss, podDelay, podK8s} {
			if present&(1<<i) != 0 {
				podAnn[keys[i]] = v
			}
		}
		for i, v := range []string{svcBW, svcLoss, svcDelay, svcK8s} {
			if present&(1<<(i+4)) != 0 {
				svcAnn[keys[i]] = v
			}
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Annotations: podAnn}}
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "n", Annotations: svcAnn}}
		d := reconcile.DesiredFor(pod, []*corev1.Service{svc})

		for _, e := range d.PodErrors {
			if _, ok := podAnn[e.Key]; !ok {
				t.Fatalf("error for %s, which the pod does not have", e.Key)
			}
			if len(e.Error()) > 2048 {
				t.Fatalf("error of %d bytes", len(e.Error()))
			}
		}
		// An invalid key adds nothing of its own: each kind it could set
		// must come from the other object's valid annotation, or be unset.
		podPol, _ := rules.ParseAnnotations(podAnn)
		svcPol, _ := rules.ParseAnnotations(svcAnn)
		for _, dir := range rules.Directions {
			got, pp, sp := d.Policy[dir], podPol[dir], svcPol[dir]
			if got.Bandwidth != nil && pp.Bandwidth == nil && sp.Bandwidth == nil {
				t.Fatalf("%s bandwidth %+v from no valid annotation", dir, *got.Bandwidth)
			}
			if got.Loss != nil && pp.Loss == nil && sp.Loss == nil {
				t.Fatalf("%s loss %+v from no valid annotation", dir, *got.Loss)
			}
			if got.Delay != nil && pp.Delay == nil && sp.Delay == nil {
				t.Fatalf("%s delay %+v from no valid annotation", dir, *got.Delay)
			}

			cfg, err := datapath.ConfigFor(got)
			if err != nil {
				t.Fatalf("valid policy %s %+v refused by the datapath: %v (annotations pod %q, service %q)", dir, got, err, podAnn, svcAnn)
			}
			if bw := got.Bandwidth; bw != nil && cfg.RateBits() != bw.RateBitsPerSec/8*8 {
				t.Fatalf("%s rate %d bit/s became %d in the map", dir, bw.RateBitsPerSec, cfg.RateBits())
			}
			if l := got.Loss; l != nil && l.Kind != rules.LossGilbert && cfg.LossThresh != l.Threshold32() {
				t.Fatalf("%s loss threshold %d became %d in the map", dir, l.Threshold32(), cfg.LossThresh)
			}
			if dl := got.Delay; dl != nil && (cfg.Delay != dl.Delay || cfg.Jitter != dl.Jitter) {
				t.Fatalf("%s delay %v±%v became %v±%v in the map", dir, dl.Delay, dl.Jitter, cfg.Delay, cfg.Jitter)
			}
			back, err := datapath.ValueRoundTrip(cfg)
			if err != nil || !reflect.DeepEqual(back, cfg) {
				t.Fatalf("%s config %+v read back as %+v (%v)", dir, cfg, back, err)
			}
		}
	})
}
