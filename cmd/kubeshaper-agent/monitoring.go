package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/flowexport"
	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/metrics"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
)

// monitorOptions are the flags of per-pod traffic figures: the achieved
// rate window of /metrics and the JSON-lines flow export.
type monitorOptions struct {
	flowExport string
	flowIdle   time.Duration
	flowEvery  time.Duration
	rateWindow time.Duration
	rateStep   time.Duration
}

func addMonitorFlags(fs *flag.FlagSet, m *monitorOptions) {
	fs.StringVar(&m.flowExport, "flow-export", "", "write each ended flow as a JSON line to this file (appended), or - for stdout (default: off)")
	fs.DurationVar(&m.flowIdle, "flow-idle", 30*time.Second, "with --flow-export: a flow without a packet for this long has ended, is exported and removed")
	fs.DurationVar(&m.flowEvery, "flow-export-interval", 5*time.Second, "with --flow-export: how often the flow records are read")
	fs.DurationVar(&m.rateWindow, "rate-window", metrics.DefaultWindow, "sliding window of the achieved rate and loss metrics")
	fs.DurationVar(&m.rateStep, "rate-sample", metrics.DefaultStep, "how often every pod's counters are sampled for the achieved rate and loss")
}

// monitoring runs the metrics sampler and the flow exporter.
type monitoring struct {
	log       *logrus.Entry
	collector *metrics.Collector // nil: no /metrics
	exporter  *flowexport.Exporter
	out       io.WriteCloser
	started   bool
	done      chan struct{}
}

func newMonitoring(m monitorOptions, metricsOn bool, dp *datapath.Datapath, rec *reconcile.Reconciler, w *kube.Watcher, log *logrus.Entry) (*monitoring, error) {
	mon := &monitoring{log: log, done: make(chan struct{})}
	identity := metrics.IdentityFromLister(w.Pods)
	if metricsOn {
		mon.collector = metrics.New(dp, rec, identity, metrics.Options{Window: m.rateWindow, Step: m.rateStep})
	}
	switch m.flowExport {
	case "":
		return mon, nil
	case "-":
		mon.out = nopCloser{os.Stdout}
	default:
		f, err := os.OpenFile(m.flowExport, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--flow-export: %w", err)
		}
		mon.out = f
	}
	pods := func() map[uint32]flowexport.PodInfo {
		views := rec.Snapshot()
		out := make(map[uint32]flowexport.PodInfo, len(views))
		for _, v := range views {
			id := identity(v)
			out[uint32(v.Ifindex)] = flowexport.PodInfo{Namespace: id.Namespace, Pod: id.Pod,
				Workload: id.Workload, WorkloadKind: id.WorkloadKind, HostVeth: v.HostVeth}
		}
		return out
	}
	mon.exporter = flowexport.New(dp, pods, mon.out, flowexport.Options{Idle: m.flowIdle, Every: m.flowEvery})
	return mon, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// collectors are what /metrics adds for per-pod figures and flow export.
func (m *monitoring) collectors() []prometheus.Collector {
	var out []prometheus.Collector
	if m.collector != nil {
		out = append(out, m.collector)
	}
	if e := m.exporter; e != nil {
		out = append(out,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kubeshaper_agent_flows_exported_total", Help: "Flow records written by --flow-export."},
				func() float64 { return float64(e.Exported()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kubeshaper_agent_flow_export_errors_total", Help: "Flow export passes that failed (reading the map or writing)."},
				func() float64 { return float64(e.Failures()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kubeshaper_agent_flows_active", Help: "Flow records in the map at the exporter's last read."},
				func() float64 { return float64(e.Active()) }),
		)
	}
	return out
}

// start runs the sampler and the exporter until ctx ends. Call it once
// the start-up reconcile is done, so that no pod's flows look orphaned.
func (m *monitoring) start(ctx context.Context) {
	m.started = true
	if m.collector != nil {
		go m.collector.Run(ctx)
	}
	if m.exporter == nil {
		close(m.done)
		return
	}
	go func() {
		defer close(m.done)
		m.exporter.Run(ctx, func(err error) { m.log.WithError(err).Warn("flow export") })
	}()
}

// wait returns once the exporter has written the remaining flows (after
// ctx ended): before a cleanup removes them.
func (m *monitoring) wait() {
	if !m.started {
		return
	}
	<-m.done
	if m.out != nil {
		m.out.Close()
	}
}
