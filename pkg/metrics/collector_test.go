package metrics

import (
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// fakeDP is a datapath whose counters the test sets.
type fakeDP struct {
	mu   sync.Mutex
	cnt  map[datapath.Key]datapath.Counters
	cfgs map[datapath.Key]datapath.Config
}

func (f *fakeDP) Counters(k datapath.Key) (datapath.Counters, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cnt[k]
	return c, ok, nil
}

func (f *fakeDP) Lookup(k datapath.Key) (datapath.Config, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cfgs[k]
	return c, ok, nil
}

func (f *fakeDP) add(k datapath.Key, packets, bytes uint64, lossPackets, lossBytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cnt[k]
	c.Packets += packets
	c.Bytes += bytes
	c.DropPackets[datapath.ReasonLoss] += lossPackets
	c.DropBytes[datapath.ReasonLoss] += lossBytes
	f.cnt[k] = c
}

type fakePods struct {
	mu    sync.Mutex
	views []reconcile.PodView
}

func (f *fakePods) Snapshot() []reconcile.PodView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]reconcile.PodView(nil), f.views...)
}

func cfgOf(t *testing.T, p rules.DirectionPolicy) datapath.Config {
	t.Helper()
	c, err := datapath.ConfigFor(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// series renders what a registry exposes as "name{k=v,...} value" lines.
func series(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var lv []string
			for _, l := range m.Label {
				lv = append(lv, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(lv)
			out[mf.GetName()+"{"+strings.Join(lv, ",")+"}"] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return math.NaN()
}

func TestCollectorSeriesFollowPods(t *testing.T) {
	dp := &fakeDP{cnt: map[datapath.Key]datapath.Counters{}, cfgs: map[datapath.Key]datapath.Config{}}
	web := reconcile.PodView{Key: "shop/web-1", UID: "u1", Ifindex: 7, HostVeth: "veth7"}
	db := reconcile.PodView{Key: "shop/db-0", UID: "u2", Ifindex: 9, HostVeth: "veth9"}
	for _, v := range []reconcile.PodView{web, db} {
		for _, d := range rules.Directions {
			dp.cfgs[datapath.KeyOf(v.Ifindex, d)] = cfgOf(t, rules.DirectionPolicy{})
			dp.cnt[datapath.KeyOf(v.Ifindex, d)] = datapath.Counters{}
		}
	}
	dp.cfgs[datapath.KeyOf(7, rules.Egress)] = cfgOf(t, rules.DirectionPolicy{
		Bandwidth: &rules.Bandwidth{RateBitsPerSec: 20e6, Mode: rules.ModeDrop},
		Loss:      &rules.Loss{Kind: rules.LossUniform, Percent: 2},
	})
	dp.add(datapath.KeyOf(7, rules.Egress), 100, 150000, 2, 3000)
	pods := &fakePods{views: []reconcile.PodView{web, db}}
	ids := map[string]Identity{"shop/web-1": {"shop", "web-1", "web", "Deployment"}, "shop/db-0": {"shop", "db-0", "db", "StatefulSet"}}
	c := New(dp, pods, func(v reconcile.PodView) Identity { return ids[v.Key] }, Options{})

	got := series(t, c)
	webEg := "direction=egress,namespace=shop,pod=web-1,workload=web,workload_kind=Deployment"
	want := map[string]float64{
		key("kubeshaper_pod_packets_total", webEg):                                                                             100,
		key("kubeshaper_pod_bytes_total", webEg):                                                                               150000,
		key("kubeshaper_pod_drops_total", webEg, "reason=loss"):                                                                2,
		key("kubeshaper_pod_drops_total", webEg, "reason=bandwidth"):                                                           0,
		key("kubeshaper_pod_dropped_bytes_total", webEg, "reason=loss"):                                                        3000,
		key("kubeshaper_rule_rate_bits", webEg):                                                                                20e6,
		key("kubeshaper_rule_loss_ratio", webEg):                                                                               0.02,
		key("kubeshaper_pod_info", "host_veth=veth9,namespace=shop,pod=db-0,uid=u2,workload=db,workload_kind=StatefulSet"):     1,
		key("kubeshaper_pod_packets_total", "direction=ingress,namespace=shop,pod=db-0,workload=db,workload_kind=StatefulSet"): 0,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if math.Abs(g-v) > 1e-9*math.Max(1, v) {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "kubeshaper_rule_rate_bits") && !strings.Contains(k, webEg) {
			t.Errorf("a rate series without a rate rule: %s", k)
		}
	}
	if _, ok := got[key("kubeshaper_rule_info", webEg, "rule=bandwidth 20mbit burst=1250000 mode=drop; loss 2%")]; !ok {
		t.Errorf("no rule_info for web egress: %v", keysWith(got, "rule_info"))
	}

	// The pod goes: every series of it goes with it.
	pods.mu.Lock()
	pods.views = []reconcile.PodView{web}
	pods.mu.Unlock()
	for k := range series(t, c) {
		if strings.Contains(k, "db-0") {
			t.Errorf("series of a deleted pod: %s", k)
		}
	}
}

// key renders a series as series() does: labels sorted.
func key(name string, labels ...string) string {
	var lv []string
	for _, l := range labels {
		lv = append(lv, strings.Split(l, ",")...)
	}
	sort.Strings(lv)
	return name + "{" + strings.Join(lv, ",") + "}"
}

func keysWith(m map[string]float64, sub string) []string {
	var out []string
	for k := range m {
		if strings.Contains(k, sub) {
			out = append(out, k)
		}
	}
	return out
}

func TestAchievedOverTheWindow(t *testing.T) {
	dp := &fakeDP{cnt: map[datapath.Key]datapath.Counters{}, cfgs: map[datapath.Key]datapath.Config{}}
	v := reconcile.PodView{Key: "ns/p", UID: "u", Ifindex: 3, HostVeth: "v3"}
	eg := datapath.KeyOf(3, rules.Egress)
	dp.cnt[eg] = datapath.Counters{}
	dp.cnt[datapath.KeyOf(3, rules.Ingress)] = datapath.Counters{}
	pods := &fakePods{views: []reconcile.PodView{v}}
	c := New(dp, pods, nil, Options{Window: 10 * time.Second, Step: 2 * time.Second})
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	rate := func() (float64, float64, bool) {
		got := series(t, c)
		r, ok := got["kubeshaper_pod_achieved_rate_bits{direction=egress,namespace=ns,pod=p,workload=p,workload_kind=Pod}"]
		l := got["kubeshaper_pod_achieved_loss_ratio{direction=egress,namespace=ns,pod=p,workload=p,workload_kind=Pod}"]
		return r, l, ok
	}
	if _, _, ok := rate(); ok {
		t.Fatal("an achieved rate before any sample")
	}
	// 1 Mbit/s offered for 20 s, 10 % of it lost, then 4 Mbit/s with no
	// loss: the window (10-12 s) must see only the latest regime.
	for i := 0; i < 20; i++ {
		c.Sample()
		now = now.Add(time.Second)
		dp.add(eg, 100, 125000, 10, 12500)
	}
	r, l, ok := rate()
	if !ok || math.Abs(r-0.9e6) > 1 || math.Abs(l-0.1) > 1e-9 {
		t.Fatalf("steady: rate %v loss %v (ok %v), want 0.9e6 and 0.1", r, l, ok)
	}
	for i := 0; i < 12; i++ {
		c.Sample()
		now = now.Add(time.Second)
		dp.add(eg, 400, 500000, 0, 0)
	}
	if r, l, _ := rate(); math.Abs(r-4e6) > 1 || l != 0 {
		t.Fatalf("after the change: rate %v loss %v, want 4e6 and 0", r, l)
	}
	// Idle: the rate falls to 0 and the loss ratio is absent (no packets).
	for i := 0; i < 12; i++ {
		c.Sample()
		now = now.Add(time.Second)
	}
	got := series(t, c)
	if r := got["kubeshaper_pod_achieved_rate_bits{direction=egress,namespace=ns,pod=p,workload=p,workload_kind=Pod}"]; r != 0 {
		t.Errorf("idle rate %v", r)
	}
	if len(keysWith(got, "achieved_loss")) != 0 {
		t.Errorf("a loss ratio without packets: %v", keysWith(got, "achieved_loss"))
	}
	// Counters recreated (smaller): no bogus negative or huge rate.
	dp.cnt[eg] = datapath.Counters{Packets: 1, Bytes: 100}
	if r, _, ok := rate(); ok && r != 0 {
		t.Errorf("rate across a counter reset: %v", r)
	}
	// The pod goes: its ring goes.
	pods.views = nil
	c.Sample()
	if len(c.rings) != 0 {
		t.Errorf("%d rings left for gone pods", len(c.rings))
	}
}

func TestIdentityFromLister(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	yes := true
	idx.Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-5d4f7c9b8-x2x", UID: "u1",
		Labels:          map[string]string{"pod-template-hash": "5d4f7c9b8"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f7c9b8", Controller: &yes}}}})
	f := IdentityFromLister(listersv1.NewPodLister(idx))
	if got := f(reconcile.PodView{Key: "shop/web-5d4f7c9b8-x2x", UID: "u1"}); got != (Identity{"shop", "web-5d4f7c9b8-x2x", "web", "Deployment"}) {
		t.Errorf("%+v", got)
	}
	if got := f(reconcile.PodView{Key: "shop/gone", UID: "u9"}); got != (Identity{"shop", "gone", "gone", "Pod"}) {
		t.Errorf("%+v", got)
	}
}

func TestRequestedLoss(t *testing.T) {
	cases := []struct {
		loss *rules.Loss
		want float64
	}{
		{nil, 0},
		{&rules.Loss{Kind: rules.LossUniform, Percent: 2}, 0.02},
		// π(bad) = 1/(1+10); all lost in bad, none in good.
		{&rules.Loss{Kind: rules.LossGilbert, Gilbert: rules.Gilbert{P: 1, R: 10, H: 0, K: 100}}, 1.0 / 11},
		// π(bad) = 0.5; 50 % lost in bad, 10 % in good.
		{&rules.Loss{Kind: rules.LossGilbert, Gilbert: rules.Gilbert{P: 5, R: 5, H: 50, K: 90}}, 0.5*0.1 + 0.5*0.5},
	}
	for _, tc := range cases {
		got := RequestedLoss(cfgOf(t, rules.DirectionPolicy{Loss: tc.loss}))
		if math.Abs(got-tc.want) > 1e-6 {
			t.Errorf("%+v: %v, want %v", tc.loss, got, tc.want)
		}
	}
}
