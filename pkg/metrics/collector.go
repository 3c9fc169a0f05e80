// Package metrics exports every pod's traffic figures to Prometheus: the
// datapath's counters (packets, bytes, drops by reason) read on scrape, the
// rule each pod asked for, and what it achieved over a sliding window
// (a sampler keeps a short ring of counter readings per pod). Series come
// from the reconciler's snapshot of the pods it applies state to, so those
// of a deleted pod are gone from the next scrape.
package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Defaults of Options.
const (
	DefaultWindow = 30 * time.Second
	DefaultStep   = 5 * time.Second
)

// Reader is what the collector reads of the datapath (*datapath.Datapath).
type Reader interface {
	Counters(datapath.Key) (datapath.Counters, bool, error)
	Lookup(datapath.Key) (datapath.Config, bool, error)
}

// PodSource lists the pods the agent applies state to (*reconcile.Reconciler).
type PodSource interface {
	Snapshot() []reconcile.PodView
}

// Identity is how a pod is labelled.
type Identity struct {
	Namespace, Pod, Workload, WorkloadKind string
}

// Options tune the achieved-rate window.
type Options struct {
	// Window is how far back the achieved rate and loss look (default 30 s).
	Window time.Duration
	// Step is how often the sampler reads every pod's counters (default 5 s);
	// the achieved figures span Window to Window+Step.
	Step time.Duration
}

// Collector is a prometheus.Collector reading the datapath on scrape.
type Collector struct {
	dp       Reader
	pods     PodSource
	identity func(reconcile.PodView) Identity
	opts     Options
	now      func() time.Time

	mu    sync.Mutex
	rings map[ringKey]*ring

	readErrors atomic.Uint64
}

type ringKey struct {
	uid     types.UID
	ifindex int
	dir     rules.Direction
}

type sample struct {
	at time.Time
	c  datapath.Counters
}

// ring holds readings oldest first: the first is the newest one at least
// Window old (or the oldest there is), so [first, now] spans the window.
type ring struct{ s []sample }

func (r *ring) add(s sample, window time.Duration) {
	if n := len(r.s); n > 0 && (s.c.Packets < r.s[n-1].c.Packets || s.c.Bytes < r.s[n-1].c.Bytes) {
		r.s = r.s[:0] // the counters were recreated: start over
	}
	r.s = append(r.s, s)
	for len(r.s) > 1 && s.at.Sub(r.s[1].at) >= window {
		r.s = r.s[1:]
	}
}

// New returns a collector; Run keeps its sampler going. identity labels a
// pod (see IdentityFromLister); nil labels pods by key alone.
func New(dp Reader, pods PodSource, identity func(reconcile.PodView) Identity, opts Options) *Collector {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Step <= 0 {
		opts.Step = DefaultStep
	}
	if identity == nil {
		identity = identityFromKey
	}
	return &Collector{dp: dp, pods: pods, identity: identity, opts: opts, now: time.Now, rings: map[ringKey]*ring{}}
}

// Run samples every pod's counters every Step until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.Step)
	defer t.Stop()
	for {
		c.Sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample reads every pod's counters once into its ring and forgets the
// rings of pods no longer applied.
func (c *Collector) Sample() {
	views := c.pods.Snapshot()
	now := c.now()
	type reading struct {
		k ringKey
		c datapath.Counters
	}
	var got []reading
	for _, v := range views {
		for _, d := range rules.Directions {
			cnt, ok, err := c.dp.Counters(datapath.KeyOf(v.Ifindex, d))
			if err != nil {
				c.readErrors.Add(1)
				continue
			}
			if ok {
				got = append(got, reading{ringKey{v.UID, v.Ifindex, d}, cnt})
			}
		}
	}
	live := map[ringKey]bool{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range got {
		live[r.k] = true
		rg := c.rings[r.k]
		if rg == nil {
			rg = &ring{}
			c.rings[r.k] = rg
		}
		rg.add(sample{now, r.c}, c.opts.Window)
	}
	for k := range c.rings {
		if !live[k] {
			delete(c.rings, k)
		}
	}
}

// ReadErrors counts failed datapath reads (scrapes and samples).
func (c *Collector) ReadErrors() uint64 { return c.readErrors.Load() }

// Achieved is what a pod's direction achieved over the window, cur being
// its counters read now (for the agent's /status); ok is false before the
// sampler has a reading at least a second old.
func (c *Collector) Achieved(v reconcile.PodView, d rules.Direction, cur datapath.Counters) (datapath.Achieved, bool) {
	return c.achieved(ringKey{v.UID, v.Ifindex, d}, cur, c.now())
}

// Window is the sliding window of the achieved figures.
func (c *Collector) Window() time.Duration { return c.opts.Window }

// achieved compares cur with the oldest reading of the window.
func (c *Collector) achieved(k ringKey, cur datapath.Counters, now time.Time) (datapath.Achieved, bool) {
	c.mu.Lock()
	rg := c.rings[k]
	var base sample
	if rg != nil && len(rg.s) > 0 {
		base = rg.s[0]
	}
	c.mu.Unlock()
	if base.at.IsZero() || now.Sub(base.at) < time.Second {
		return datapath.Achieved{}, false
	}
	return datapath.AchievedBetween(base.c, cur, now.Sub(base.at))
}

var podLabels = []string{"namespace", "pod", "workload", "workload_kind", "direction"}

// descs is every metric's description, in declaration order, for
// Describe: a description registers itself where it is declared, so that
// a new metric cannot be left out of Describe.
var descs []*prometheus.Desc

func described(d *prometheus.Desc) *prometheus.Desc {
	descs = append(descs, d)
	return d
}

// desc describes a per-pod, per-direction metric.
func desc(name, help string, extra ...string) *prometheus.Desc {
	return described(prometheus.NewDesc(name, help, append(append([]string{}, podLabels...), extra...), nil))
}

var (
	descPackets = desc("kubeshaper_pod_packets_total",
		"Packets the pod sent (direction=egress) or received (ingress), seen at its host veth's tc hook, dropped ones included; a GSO packet counts as its wire segments.")
	descBytes = desc("kubeshaper_pod_bytes_total",
		"Wire (L2) bytes the pod sent or received, seen at its host veth's tc hook, dropped ones included.")
	descDrops = desc("kubeshaper_pod_drops_total",
		"Packets kubeshaper dropped, by reason: bandwidth (rate limit), loss (injected), horizon (EDT queue too long), program (custom program).", "reason")
	descDropBytes = desc("kubeshaper_pod_dropped_bytes_total",
		"Wire bytes kubeshaper dropped, by reason.", "reason")
	descRetrans = desc("kubeshaper_pod_caused_retransmissions_total",
		"Bandwidth drops of TCP segments carrying data: the retransmissions kubeshaper's policer made the pod's TCP senders pay (near 0 where sockets are paced).")
	descAchievedRetrans = desc("kubeshaper_pod_achieved_retransmission_ratio",
		"Bandwidth drops of TCP data / packets seen over the sliding window: the share of the traffic TCP had to send again because of the limit; absent when no packet was seen in it.")
	descRuleRate = desc("kubeshaper_rule_rate_bits",
		"Requested bandwidth limit in bits per second (wire bytes x 8); absent without a bandwidth rule.")
	descRuleLoss = desc("kubeshaper_rule_loss_ratio",
		"Requested random loss probability (0-1; Gilbert-Elliott: its stationary loss rate; with to=/port=/proto= targets, of the targeted packets); absent without a loss rule.")
	descRuleInfo = desc("kubeshaper_rule_info",
		"The rule applied, in the annotation grammar (\"monitor\": counted only).", "rule")
	descAchievedRate = desc("kubeshaper_pod_achieved_rate_bits",
		"Wire bits per second that passed kubeshaper's hook (seen minus dropped) over the sliding window (the agent's --rate-window, default 30 s).")
	descAchievedLoss = desc("kubeshaper_pod_achieved_loss_ratio",
		"Injected-loss drops / packets seen over the sliding window; absent when no packet was seen in it.")
	descEnforced = desc("kubeshaper_pod_enforced",
		"1 when kubeshaper's program is verified to see the direction's traffic first (placement and counters, judged every 2 s), 0 when another program ends the hook before it or deliveries bypass it (see the Bypassed Event and `kubeshaper status` for the reason); absent before the first judgement.")
	descPodInfo = described(prometheus.NewDesc("kubeshaper_pod_info",
		"A pod kubeshaper counts, with its host veth.",
		[]string{"namespace", "pod", "workload", "workload_kind", "uid", "host_veth"}, nil))
	descReadErrors = described(prometheus.NewDesc("kubeshaper_agent_datapath_read_errors_total",
		"Failed reads of the datapath's maps by the metrics collector.", nil, nil))
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one pass over the pods the
// agent applies state to, reading their counters and rules now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, v := range c.pods.Snapshot() {
		id := c.identity(v)
		ch <- prometheus.MustNewConstMetric(descPodInfo, prometheus.GaugeValue, 1,
			id.Namespace, id.Pod, id.Workload, id.WorkloadKind, string(v.UID), v.HostVeth)
		for _, d := range rules.Directions {
			c.collectDirection(ch, v, id, d, now)
		}
	}
	ch <- prometheus.MustNewConstMetric(descReadErrors, prometheus.CounterValue, float64(c.readErrors.Load()))
}

func (c *Collector) collectDirection(ch chan<- prometheus.Metric, v reconcile.PodView, id Identity, d rules.Direction, now time.Time) {
	key := datapath.KeyOf(v.Ifindex, d)
	cnt, ok, err := c.dp.Counters(key)
	if err != nil {
		c.readErrors.Add(1)
		return
	}
	if !ok {
		return // removed since the snapshot
	}
	lv := []string{id.Namespace, id.Pod, id.Workload, id.WorkloadKind, d.String()}
	with := func(extra string) []string { return append(append(make([]string, 0, len(lv)+1), lv...), extra) }
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(cnt.Packets), lv...)
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(cnt.Bytes), lv...)
	if v.Judged {
		e := 0.0
		if v.Enforcement[d].Enforced {
			e = 1
		}
		ch <- prometheus.MustNewConstMetric(descEnforced, prometheus.GaugeValue, e, lv...)
	}
	for i, name := range datapath.ReasonNames {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(cnt.DropPackets[i]), with(name)...)
		ch <- prometheus.MustNewConstMetric(descDropBytes, prometheus.CounterValue, float64(cnt.DropBytes[i]), with(name)...)
	}
	ch <- prometheus.MustNewConstMetric(descRetrans, prometheus.CounterValue, float64(cnt.TcpDataBwDrops), lv...)
	if cfg, ok, err := c.dp.Lookup(key); err != nil {
		c.readErrors.Add(1)
	} else if ok {
		ch <- prometheus.MustNewConstMetric(descRuleInfo, prometheus.GaugeValue, 1, with(cfg.String())...)
		if r := cfg.RateBits(); r > 0 {
			ch <- prometheus.MustNewConstMetric(descRuleRate, prometheus.GaugeValue, float64(r), lv...)
		}
		if p := RequestedLoss(cfg); p > 0 {
			ch <- prometheus.MustNewConstMetric(descRuleLoss, prometheus.GaugeValue, p, lv...)
		}
	}
	if a, ok := c.achieved(ringKey{v.UID, v.Ifindex, d}, cnt, now); ok {
		ch <- prometheus.MustNewConstMetric(descAchievedRate, prometheus.GaugeValue, a.RateBits, lv...)
		if a.Packets > 0 {
			ch <- prometheus.MustNewConstMetric(descAchievedLoss, prometheus.GaugeValue, a.LossRatio, lv...)
			ch <- prometheus.MustNewConstMetric(descAchievedRetrans, prometheus.GaugeValue, a.RetransRatio, lv...)
		}
	}
}

// RequestedLoss is the long-run share of packets a rule's loss drops:
// uniform loss's probability, a Gilbert-Elliott chain's stationary loss
// rate ((1-π)(1-k) + π(1-h), π = p/(p+r) the time in the bad state), or
// both combined (independent draws).
func RequestedLoss(c datapath.Config) float64 {
	keep := 1 - c.LossProbability()
	if g := c.Gilbert; g != (datapath.Gilbert{}) {
		const one = 1 << 32
		p, r := float64(g.P)/one, float64(g.R)/one
		lossGood, lossBad := float64(g.LossGood)/one, 1-float64(g.H)/one
		bad := 0.0 // p = r = 0: the chain stays in the good state
		if p+r > 0 {
			bad = p / (p + r)
		}
		keep *= 1 - ((1-bad)*lossGood + bad*lossBad)
	}
	return 1 - keep
}
