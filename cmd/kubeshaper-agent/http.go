package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/nodestatus"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
)

// apiProbe tracks whether the API server answers, for /readyz: during an
// outage the agent keeps rules in effect but says it is not ready.
type apiProbe struct {
	client *kube.Client
	log    *logrus.Entry
	ok     atomic.Bool
}

func newAPIProbe(c *kube.Client, log *logrus.Entry) *apiProbe {
	return &apiProbe{client: c, log: log}
}

func (p *apiProbe) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lost time.Time
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := p.client.Ready(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Log transitions only: an outage is one line, not one a probe.
		switch was := p.ok.Swap(err == nil); {
		case was && err != nil:
			lost = time.Now()
			p.log.WithError(err).Warn("the API server does not answer: rules stay in effect, changes wait for its return")
		case !was && err == nil && !lost.IsZero():
			p.log.WithField("after", time.Since(lost).Round(time.Second)).Info("the API server answers again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type servers struct{ list []*http.Server }

func (s *servers) shutdown() {
	for _, srv := range s.list {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(ctx)
		cancel()
	}
}

// extra are more collectors for /metrics (per-pod traffic figures). status
// (/status) is served beside /metrics, or beside /healthz when metrics
// are off.
func startHTTP(o options, log *logrus.Entry, w *kube.Watcher, rec *reconcile.Reconciler, api *apiProbe, status http.Handler, extra ...prometheus.Collector) *servers {
	s := &servers{}
	serve := func(addr string, h http.Handler) {
		srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
		s.list = append(s.list, srv)
		go func() {
			if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.WithError(err).WithField("addr", addr).Error("HTTP server failed")
			}
		}()
	}
	if o.healthAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { rw.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
			switch {
			case !w.HasSynced() || !rec.Ready():
				http.Error(rw, "starting: caches or start-up reconcile not done", http.StatusServiceUnavailable)
			case !api.ok.Load():
				http.Error(rw, "the API server does not answer: rules stay in effect, changes wait", http.StatusServiceUnavailable)
			default:
				rw.Write([]byte("ok\n"))
			}
		})
		if o.metricsAddr == "" {
			mux.Handle(nodestatus.Path, status)
		}
		serve(o.healthAddr, mux)
	}
	if o.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kubeshaper_agent_pods", Help: "Pods the agent currently applies state to."},
				func() float64 { return float64(rec.Stats().Pods) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kubeshaper_agent_reconcile_errors_total", Help: "Failed pod reconciles (each retried)."},
				func() float64 { return float64(rec.Stats().Errors) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kubeshaper_agent_queue_depth", Help: "Pod keys waiting to be reconciled."},
				func() float64 { return float64(w.Queue.Len()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kubeshaper_agent_last_sync_timestamp_seconds", Help: "When a pod was last reconciled successfully."},
				func() float64 {
					t := rec.Stats().LastSync
					if t.IsZero() {
						return 0
					}
					return float64(t.UnixNano()) / 1e9
				}),
		)
		reg.MustRegister(extra...)
		// The agent's own runtime and process (go_*, process_*): its heap,
		// GOMAXPROCS and resident memory, as every Go exporter shows them.
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		// At most two scrapes at once (Prometheus HA pairs), the rest get
		// 503: a scraper that gives up and retries while a slow node is
		// still gathering would otherwise stack collections of every pod's
		// counters in the agent's heap. (A 64-CPU TCG guest's agent, polled
		// three times every 200 ms by a 2 s-timeout client while it
		// applied 250 pods, had 52 MB of freed heap when read after.)
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 2}))
		mux.Handle(nodestatus.Path, status)
		serve(o.metricsAddr, mux)
	}
	return s
}
