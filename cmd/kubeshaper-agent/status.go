package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/metrics"
	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

// statusServer answers /status (pkg/nodestatus): what `kubectl kubeshaper
// status` gathers from every agent through the API server's pod proxy.
// Read-only: the reconciler's snapshot and caches, the pinned maps.
type statusServer struct {
	node string
	rec  *reconcile.Reconciler
	dp   *datapath.Datapath
	col  *metrics.Collector // nil without /metrics: no achieved figures
	// kernel judges enforcement (where our programs run, the pod
	// interface's counters); nil: not judged.
	kernel *shaper.Node

	mu sync.Mutex
	// last is each pod's traffic reading kept for the next request's
	// judgement (by UID and ifindex: a new sandbox starts over).
	last map[string]reading
}

type reading struct {
	at time.Time
	t  shaper.Traffic
}

func (s *statusServer) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		http.Error(rw, "GET only", http.StatusMethodNotAllowed)
		return
	}
	ns := req.URL.Query().Get("namespace")
	st := nodestatus.Node{Node: s.node, Time: time.Now().UTC(), Pods: []nodestatus.Pod{}}
	if s.col != nil {
		st.WindowSeconds = s.col.Window().Seconds()
	}
	views := s.rec.Snapshot()
	s.forget(views)
	for _, v := range views {
		if ns != "" && !strings.HasPrefix(v.Key, ns+"/") {
			continue
		}
		st.Pods = append(st.Pods, s.pod(v))
	}
	rw.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(rw)
	enc.SetIndent("", "  ")
	enc.Encode(st)
}

func (s *statusServer) pod(v reconcile.PodView) nodestatus.Pod {
	nsName, name, _ := strings.Cut(v.Key, "/")
	p := nodestatus.Pod{Namespace: nsName, Name: name, UID: string(v.UID), HostVeth: v.HostVeth,
		Ifindex: v.Ifindex, Rules: v.Policy.String(), Directions: []nodestatus.Direction{}}
	var from [2]map[string]string
	if want, ok := s.rec.Why(v.Key); ok {
		srcs := make([]nodestatus.SourcePolicy, len(want.Sources))
		for i, src := range want.Sources {
			srcs[i] = nodestatus.SourcePolicy{Kind: src.Kind, Name: src.Name, Policy: src.Policy}
		}
		var wins map[int][]string
		from, wins = nodestatus.Origins(v.Policy, srcs)
		for i, src := range want.Sources {
			if src.Policy.IsEmpty() && len(wins[i]) == 0 {
				continue
			}
			p.Sources = append(p.Sources, nodestatus.Source{Kind: src.Kind, Name: src.Name, Rules: src.Policy.String(), Wins: wins[i]})
		}
		p.Invalid = invalid(want)
	}
	enf, judged := s.enforcement(v)
	for _, d := range rules.Directions {
		if ds, ok := s.direction(v, d); ok {
			ds.From = from[d]
			if judged {
				e := enf[d]
				ds.Enforced, ds.Reason, ds.Attachment, ds.Bypassed = &e.Enforced, e.Reason, e.Attachment, e.Bypassed
				if p.Enforced == nil || !e.Enforced {
					p.Enforced = &e.Enforced
					if !e.Enforced {
						p.Reason = d.String() + ": " + e.Reason
					}
				}
			}
			p.Directions = append(p.Directions, ds)
		}
	}
	return p
}

// enforcement judges both directions of a pod as the node CLI does: from
// where kubeshaper's programs are and, when this agent read the pod's
// counters at least a second ago (a previous /status), from the traffic
// in between.
func (s *statusServer) enforcement(v reconcile.PodView) ([2]shaper.Enforcement, bool) {
	if s.kernel == nil || v.Iface.Index == 0 {
		return [2]shaper.Enforcement{}, false
	}
	pl := s.kernel.Placements(v.Iface)
	now := reading{at: time.Now(), t: s.kernel.ReadTraffic(v.Iface)}
	id := fmt.Sprintf("%s/%d", v.UID, v.Iface.Index)
	s.mu.Lock()
	prev, ok := s.last[id]
	if !ok || now.at.Sub(prev.at) >= time.Second {
		s.last[id] = now
	}
	s.mu.Unlock()
	if ok && now.at.Sub(prev.at) >= time.Second {
		return shaper.Judge(pl, &prev.t, &now.t), true
	}
	return shaper.Judge(pl, nil, nil), true
}

// forget drops the readings of pods no longer applied.
func (s *statusServer) forget(live []reconcile.PodView) {
	keep := map[string]bool{}
	for _, v := range live {
		keep[fmt.Sprintf("%s/%d", v.UID, v.Iface.Index)] = true
	}
	s.mu.Lock()
	for id := range s.last {
		if !keep[id] {
			delete(s.last, id)
		}
	}
	s.mu.Unlock()
}

func invalid(want reconcile.Desired) []nodestatus.Invalid {
	var out []nodestatus.Invalid
	names := make([]string, 0, len(want.ServiceErrors))
	for n := range want.ServiceErrors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, e := range want.ServiceErrors[n] {
			out = append(out, nodestatus.Invalid{Kind: "Service", Name: n, Key: e.Key, Message: e.Error()})
		}
	}
	for _, e := range want.PodErrors {
		out = append(out, nodestatus.Invalid{Kind: "Pod", Key: e.Key, Message: e.Error()})
	}
	return out
}

func (s *statusServer) direction(v reconcile.PodView, d rules.Direction) (nodestatus.Direction, bool) {
	k := datapath.KeyOf(v.Ifindex, d)
	cfg, ok, err := s.dp.Lookup(k)
	if err != nil || !ok {
		return nodestatus.Direction{}, false
	}
	c, _, err := s.dp.Counters(k)
	if err != nil {
		return nodestatus.Direction{}, false
	}
	ds := nodestatus.Direction{Direction: d.String(), Rule: cfg.String(), RateBits: cfg.RateBits(),
		LossRatio: metrics.RequestedLoss(cfg), Packets: c.Packets, Bytes: c.Bytes, Drops: map[string]nodestatus.Drop{}}
	if bw := v.Policy[d].Bandwidth; bw != nil {
		ds.Mode = string(bw.Mode)
	}
	for i, name := range datapath.ReasonNames {
		if c.DropPackets[i] > 0 {
			ds.Drops[name] = nodestatus.Drop{Packets: c.DropPackets[i], Bytes: c.DropBytes[i]}
		}
	}
	if s.col != nil {
		if a, ok := s.col.Achieved(v, d, c); ok {
			ds.Achieved = &nodestatus.Achieved{WindowSeconds: a.Span.Seconds(), Packets: a.Packets, RateBits: a.RateBits}
			if a.Packets > 0 {
				l := a.LossRatio
				ds.Achieved.LossRatio = &l
			}
		}
	}
	return ds, true
}
