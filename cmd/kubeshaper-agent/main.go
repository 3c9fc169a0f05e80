// Command kubeshaper-agent is the node agent a DaemonSet runs: it watches
// the pods on its node (and the Services selecting them) and reconciles
// their annotations into kubeshaper's datapath.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/kube"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/reconcile"
	"github.com/kubeshaper/kubeshaper/pkg/shaper"
)

type options struct {
	kubeconfig    string
	nodeName      string
	metricsAddr   string
	healthAddr    string
	cleanupOnExit bool
	logLevel      string
	logFormat     string
	bpffs         string
	nodeNetns     string
	resync        time.Duration
	workers       int
	impair        impairOptions
	mon           monitorOptions
	nsSelector    string
	maxPods       int
	flowEntries   int
	standard      string
	yieldTo       string
}

func main() {
	startTuned()
	var o options
	fs := flag.NewFlagSet("kubeshaper-agent", flag.ExitOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", ":9990", "address for /metrics (empty: off)")
	fs.StringVar(&o.healthAddr, "health-addr", ":9991", "address for /healthz and /readyz (empty: off)")
	fs.BoolVar(&o.cleanupOnExit, "cleanup-on-exit", true, "on SIGTERM remove every filter, qdisc and map entry (false keeps rules in effect for the next agent)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&o.bpffs, "bpffs", "", "directory to pin maps in (default /sys/fs/bpf/kubeshaper)")
	fs.StringVar(&o.nodeNetns, "node-netns", "", "netns path holding the pods' host veths (default: the agent's own; for tests)")
	fs.DurationVar(&o.resync, "resync", time.Minute, "period of the full level-triggered resync and leftover collection")
	fs.IntVar(&o.workers, "workers", 2, "pods reconciled in parallel")
	fs.IntVar(&o.maxPods, "max-pods", 0, "size the BPF maps for this many pods (default: the Node's allocatable pods); a larger value than the pinned maps' migrates them")
	fs.IntVar(&o.flowEntries, "flow-entries", datapath.DefaultFlowEntries, "records of the per-flow table, rounded up to a power of two (a full set of 8 evicts its least recently seen flow)")
	addImpairFlags(fs, &o.impair)
	addMonitorFlags(fs, &o.mon)
	fs.StringVar(&o.standard, "standard-annotations", "auto", "kubernetes.io/{in,e}gress-bandwidth: auto (enforce them unless the CNI bandwidth plugin or Cilium's bandwidth manager already does, then step back with an Event), on (always), off (never)")
	fs.StringVar(&o.yieldTo, "tcx-yield-to", "", "comma-separated tcx program names (as bpftool shows them) that kubeshaper lets run first on a pod's hooks instead of taking the head; pods behind one that ends the hook are reported not enforced")
	fs.StringVar(&o.nsSelector, "namespace-selector", "", "label selector on Namespaces (e.g. 'kubeshaper.io/allowed=true'): only their pods are shaped and counted; pods of other namespaces are left alone even when annotated (default: every namespace)")
	fs.Parse(os.Args[1:])
	tuneRuntime(o.workers)

	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeshaper-agent: %v\n", err)
		os.Exit(2)
	}
	nsSel, err := parseNamespaceSelector(o.nsSelector)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeshaper-agent: %v\n", err)
		os.Exit(2)
	}
	if o.standard, err = reconcile.ParseStandardAnnotations(o.standard); err != nil {
		fmt.Fprintf(os.Stderr, "kubeshaper-agent: %v\n", err)
		os.Exit(2)
	}
	if err := run(o, nsSel, log); err != nil {
		log.WithError(err).Error("exiting")
		os.Exit(1)
	}
}

func newLogger(level, format string) (*logrus.Entry, error) {
	l := logrus.New()
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	l.SetLevel(lvl)
	switch format {
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return logrus.NewEntry(l), nil
}

// restConfig follows --kubeconfig, then in-cluster, then $KUBECONFIG, then
// ~/.kube/config.
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return clientcmd.BuildConfigFromFlags("", env)
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".kube", "config")
	if _, err := os.Stat(p); err != nil {
		return nil, errors.New("no Kubernetes configuration: not in a cluster, no --kubeconfig, no $KUBECONFIG, no ~/.kube/config")
	}
	return clientcmd.BuildConfigFromFlags("", p)
}

func pinDir(o options) (string, error) {
	if o.bpffs != "" {
		return o.bpffs, nil
	}
	if o.nodeNetns == "" {
		return datapath.DefaultPinDir()
	}
	var dir string
	err := podnet.Do(o.nodeNetns, func() (err error) { dir, err = datapath.DefaultPinDir(); return err })
	return dir, err
}

// parseNamespaceSelector parses --namespace-selector; nil means every
// namespace.
func parseNamespaceSelector(s string) (labels.Selector, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--namespace-selector %q: %w", s, err)
	}
	return sel, nil
}

func run(o options, nsSel labels.Selector, log *logrus.Entry) error {
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubeshaper-agent"
	client, err := kube.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("building the Kubernetes client: %w", err)
	}
	dir, err := pinDir(o)
	if err != nil {
		return err
	}
	dp, err := datapath.OpenWith(dir, mapOptions(o, client, log))
	if err != nil {
		return err
	}
	defer dp.Close()
	if err := o.impair.apply(dp); err != nil {
		return err
	}

	w, err := kube.NewWatcher(client, o.nodeName, o.resync)
	if err != nil {
		return err
	}
	if nsSel != nil {
		if err := w.SelectNamespaces(nsSel); err != nil {
			return err
		}
		log.WithField("selector", nsSel.String()).Info("shaping only pods of namespaces matching --namespace-selector")
	}
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(client.EventSink())
	defer bc.Shutdown()
	recorder := bc.NewRecorder(client.Scheme, corev1.EventSource{Component: "kubeshaper-agent", Host: o.nodeName})

	node := shaper.NewNode(dp, o.nodeNetns, o.impair.programDir)
	if o.yieldTo != "" {
		node.SetYieldTo(strings.Split(o.yieldTo, ","))
	}
	rec := reconcile.New(w, node, recorder, log, reconcile.Options{StandardAnnotations: o.standard})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	api := newAPIProbe(client, log)
	go api.run(ctx, 5*time.Second)
	mon, err := newMonitoring(o.mon, o.metricsAddr != "", dp, rec, w, log)
	if err != nil {
		return err
	}
	st := &statusServer{node: o.nodeName, rec: rec, dp: dp, col: mon.collector, kernel: node, last: map[string]reading{}}
	srv := startHTTP(o, log, w, rec, api, st, mon.collectors()...)
	defer srv.shutdown()

	w.Start(ctx.Done())
	log.WithFields(logrus.Fields{"node": o.nodeName, "pins": dir}).Info("waiting for the pod and service caches")
	if !w.WaitForSync(ctx.Done()) {
		return errors.New("stopped before the caches synced")
	}
	start := time.Now()
	n, err := rec.InitialSync(o.workers)
	log.WithFields(logrus.Fields{"pods": n, "took": time.Since(start)}).Info("start-up reconcile done")
	if err != nil {
		log.WithError(err).Warn("some pods failed at start-up; retrying")
	}
	releaseStartupMemory()
	if n, err := trimExecutable(); err != nil {
		log.WithError(err).Debug("giving back the binary's start-up pages (the agent only reads higher)")
	} else {
		log.WithField("mapped", n).Debug("gave back the binary's start-up pages")
	}
	mon.start(ctx)
	rec.Run(ctx.Done(), o.workers, o.resync)
	mon.wait() // the exporter writes the flows left before a cleanup removes them

	if o.cleanupOnExit {
		start := time.Now()
		if err := rec.Cleanup(); err != nil {
			return fmt.Errorf("cleanup on exit: %w", err)
		}
		log.WithField("took", time.Since(start)).Info("removed every kubeshaper filter and map entry")
	} else {
		log.Info("exiting with rules left in effect (--cleanup-on-exit=false)")
	}
	return nil
}
