// Command bench measures kubeshaper's datapath with real traffic between
// network namespaces: rate accuracy (wire bytes counted on the receiving
// interface), latency at the limit (ping under load) and loss accuracy (a Go
// UDP sender/receiver with sequence numbers). It must run as root.
//
//	go build -o bin/kubeshaper ./cmd/kubeshaper
//	go run ./tools/bench                       # the full `make bench` run
//	go run ./tools/bench -sections rate -rates 100M -modes drop -reps 5 -duration 10s
//
// See tools/bench/README.md for what is measured and how.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "udp-send":
			os.Exit(udpSendMain(os.Args[2:]))
		case "udp-recv":
			os.Exit(udpRecvMain(os.Args[2:]))
		case "rr-server":
			os.Exit(rrServerMain(os.Args[2:]))
		case "rr-client":
			os.Exit(rrClientMain(os.Args[2:]))
		case "udp-sink":
			os.Exit(udpSinkMain(os.Args[2:]))
		case "replot":
			os.Exit(replotMain(os.Args[2:]))
		}
	}
	os.Exit(run())
}

// config is everything the flags select.
type config struct {
	Sections     []string      `json:"sections"`
	Rates        []uint64      `json:"rates_bps"`
	Directions   []string      `json:"directions"`
	Modes        []string      `json:"modes"`
	Reps         int           `json:"reps"`
	Duration     time.Duration `json:"-"`
	DurationS    float64       `json:"duration_s"`
	LatRates     []uint64      `json:"latency_rates_bps"`
	Pings        int           `json:"pings"`
	PingInterval time.Duration `json:"-"`
	PingEveryMs  float64       `json:"ping_interval_ms"`
	PingWarmup   time.Duration `json:"-"`
	LossN        int           `json:"loss_datagrams"`
	LossSize     int           `json:"loss_datagram_bytes"`
	LossRate     uint64        `json:"loss_send_rate_bps"`
	LossUniform  []float64     `json:"loss_uniform_pct"`
	LossExp      []float64     `json:"loss_exponential_t"`
	LossDirs     []string      `json:"loss_directions"`
	SampleEvery  time.Duration `json:"-"`
	TBFBurstTime time.Duration `json:"-"`
	TBFLatency   time.Duration `json:"-"`
	CLI          string        `json:"kubeshaper"`
	Out          string        `json:"out"`
	Plots        bool          `json:"-"`
	// The pacing section (issue 13).
	PacingCases []string      `json:"pacing_cases,omitempty"`
	Streams     []int         `json:"streams,omitempty"`
	RRDuration  time.Duration `json:"-"`
	RRDurationS float64       `json:"rr_duration_s,omitempty"`
	RRSize      int           `json:"rr_size_bytes,omitempty"`
	UDPDuration time.Duration `json:"-"`
	CNIPlugin   string        `json:"cni_plugin,omitempty"`
	// Name is the output files' name: datapath, or pacing for a run of
	// the pacing section alone (its own pacing.json, pacing.txt).
	Name string `json:"-"`

	modes []modeSpec
}

func run() int {
	var (
		cfg                                  config
		sections, rates, dirs, modes, latR   string
		lossU, lossE, lossDirs, lossRate     string
		quick                                bool
		out                                  string
		defaultSections, defaultRates        = "rate,latency,loss", "10M,100M,1G,5G"
		defaultDirs, defaultModes, defaultLR = "egress,ingress", "drop,tbf,kernel-tbf", "10M,100M"
	)
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.StringVar(&sections, "sections", defaultSections, "comma-separated sections to run: rate, latency, loss")
	fs.StringVar(&rates, "rates", defaultRates, "target rates for the rate section (bits/s; k/M/G suffixes)")
	fs.StringVar(&dirs, "directions", defaultDirs, "directions, from pod A's point of view: egress (A uploads), ingress (A downloads)")
	fs.StringVar(&modes, "modes", defaultModes, "modes: drop, tbf, pace (kubeshaper CLI), kernel-tbf (tc tbf baseline), none (unshaped), drop:burst=SIZE (SIZE in bytes, k/M suffix, or a time like 200ms = rate x time)")
	fs.IntVar(&cfg.Reps, "reps", 2, "repetitions per rate point (median, min and max are reported; the committed figures use 2: never a single run)")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "iperf3 duration per rate point (whole seconds)")
	fs.BoolVar(&quick, "quick", false, "smoke run: 5 s per point, 200 pings, 20,000 loss datagrams (unless set explicitly)")
	fs.StringVar(&latR, "latency-rates", defaultLR, "target rates for the latency section")
	fs.IntVar(&cfg.Pings, "pings", 500, "pings per latency point")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 10*time.Millisecond, "ping interval")
	fs.DurationVar(&cfg.PingWarmup, "ping-warmup", 2*time.Second, "load time before the pings start")
	fs.IntVar(&cfg.LossN, "loss-n", 100000, "UDP datagrams per loss point")
	fs.IntVar(&cfg.LossSize, "loss-size", 160, "UDP payload bytes per datagram")
	fs.StringVar(&lossRate, "loss-rate", "16M", "UDP send rate (payload bits/s)")
	fs.StringVar(&lossU, "loss-uniform", "0.1,1,10,50", "uniform loss percentages")
	fs.StringVar(&lossE, "loss-exponential", "0,50,100,300,700", "exponential loss thresholds t (P(drop)=e^(-t/100))")
	fs.StringVar(&lossDirs, "loss-directions", "egress", "directions for the loss section")
	fs.DurationVar(&cfg.SampleEvery, "sample", 50*time.Millisecond, "interval of the receiving interface's counter samples")
	fs.DurationVar(&cfg.TBFBurstTime, "ktbf-burst", 200*time.Millisecond, "kernel-tbf baseline burst, as time at the rate")
	fs.DurationVar(&cfg.TBFLatency, "ktbf-latency", 50*time.Millisecond, "kernel-tbf baseline latency (queue limit)")
	fs.StringVar(&cfg.CLI, "kubeshaper", "bin/kubeshaper", "path of the kubeshaper node CLI")
	fs.StringVar(&out, "out", "", "output directory for datapath.json and the PNGs (default docs/bench for a default run, a fresh /tmp directory otherwise)")
	fs.BoolVar(&cfg.Plots, "plots", true, "write PNG plots")
	var pcases, streams string
	fs.StringVar(&pcases, "pacing-cases", "egress,ingress,ingress-offnode", "pacing section: egress, ingress (sender a pod of this node), ingress-offnode (sender unknown to kubeshaper)")
	fs.StringVar(&streams, "streams", "1,8", "pacing section: TCP streams per transfer")
	fs.DurationVar(&cfg.RRDuration, "rr-duration", 10*time.Second, "pacing section: request/response time per point (0: none)")
	fs.IntVar(&cfg.RRSize, "rr-size", 100<<10, "pacing section: bytes per request/response exchange")
	fs.DurationVar(&cfg.UDPDuration, "udp-duration", 5*time.Second, "pacing section: UDP at 2x the limit per point (0: none)")
	fs.StringVar(&cfg.CNIPlugin, "cni-plugin", "/usr/lib/cni/bandwidth", "pacing section: the CNI bandwidth plugin binary (mode cni)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bench [flags]   (as root)\n       bench udp-send|udp-recv [flags]   (internal, run inside a netns)\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if quick {
		if !set["duration"] {
			cfg.Duration = 5 * time.Second
		}
		if !set["pings"] {
			cfg.Pings = 200
		}
		if !set["loss-n"] {
			cfg.LossN = 20000
		}
	}
	var err error
	fail := func(e error) int { fmt.Fprintln(os.Stderr, "bench:", e); return 2 }
	cfg.Sections = splitList(sections)
	for _, s := range cfg.Sections {
		if s != "rate" && s != "latency" && s != "loss" && s != "pacing" {
			return fail(fmt.Errorf("unknown section %q (want rate, latency, loss, pacing)", s))
		}
	}
	pacingOnly := len(cfg.Sections) == 1 && cfg.Sections[0] == "pacing"
	cfg.Name = "datapath"
	if pacingOnly {
		cfg.Name = "pacing"
		if !set["modes"] {
			modes = "drop,drop+pacing,tbf,kernel-tbf,cni"
		}
		if !set["rates"] {
			rates = "10M,50M,240M,1G"
		}
		if !set["reps"] {
			cfg.Reps = 3
		}
	}
	cfg.PacingCases = splitList(pcases)
	for _, c := range cfg.PacingCases {
		if c != "egress" && c != "ingress" && c != "ingress-offnode" {
			return fail(fmt.Errorf("unknown pacing case %q", c))
		}
	}
	for _, v := range splitList(streams) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fail(fmt.Errorf("bad -streams %q", streams))
		}
		cfg.Streams = append(cfg.Streams, n)
	}
	cfg.RRDurationS = cfg.RRDuration.Seconds()
	if cfg.Rates, err = parseRates(rates); err != nil {
		return fail(err)
	}
	if cfg.LatRates, err = parseRates(latR); err != nil {
		return fail(err)
	}
	if cfg.Directions, err = parseDirs(dirs); err != nil {
		return fail(err)
	}
	if cfg.LossDirs, err = parseDirs(lossDirs); err != nil {
		return fail(err)
	}
	cfg.Modes = splitList(modes)
	for _, m := range cfg.Modes {
		if pacingOnly {
			if !pacingModes[m] {
				return fail(fmt.Errorf("unknown pacing mode %q (want drop, drop+pacing, tbf, pace, kernel-tbf, cni)", m))
			}
			continue
		}
		ms, err := parseMode(m)
		if err != nil {
			return fail(err)
		}
		cfg.modes = append(cfg.modes, ms)
	}
	if cfg.LossUniform, err = parseFloats(lossU); err != nil {
		return fail(err)
	}
	if cfg.LossExp, err = parseFloats(lossE); err != nil {
		return fail(err)
	}
	lr, err := parseRates(lossRate)
	if err != nil || len(lr) != 1 {
		return fail(fmt.Errorf("bad -loss-rate %q", lossRate))
	}
	cfg.LossRate = lr[0]
	secs := int(cfg.Duration.Round(time.Second) / time.Second)
	if secs < 3 {
		return fail(fmt.Errorf("-duration must be at least 3s (1 s start + a steady window)"))
	}
	cfg.Duration = time.Duration(secs) * time.Second
	cfg.DurationS = cfg.Duration.Seconds()
	cfg.PingEveryMs = float64(cfg.PingInterval) / float64(time.Millisecond)
	if cfg.Reps < 1 {
		cfg.Reps = 1
	}
	if cfg.CLI, err = filepath.Abs(cfg.CLI); err != nil {
		return fail(err)
	}
	// A tuning run (anything but the default selection) does not overwrite
	// the committed figures unless -out says so.
	isDefault := sections == defaultSections && rates == defaultRates && dirs == defaultDirs &&
		modes == defaultModes && latR == defaultLR && !quick && !set["reps"] && !set["duration"]
	switch {
	case out != "":
	case isDefault:
		out = "docs/bench"
	default:
		out = filepath.Join(os.TempDir(), "ksb-bench-"+time.Now().Format("20060102-150405"))
	}
	cfg.Out = out
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("must run as root (network namespaces, tc)"))
	}
	for _, tool := range []string{"ip", "tc", "iperf3", "ping"} {
		if _, err := lookPath(tool); err != nil {
			return fail(fmt.Errorf("%s not found in PATH", tool))
		}
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return fail(err)
	}

	start := time.Now()
	b := &bench{cfg: cfg, procs: children}
	b.report = &report{
		Started: start.UTC().Format(time.RFC3339),
		Host:    hostInfo(),
		Config:  &b.cfg,
	}

	// Cleanup runs once: on return, or from the signal handler.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		b.stopping.Store(true)
		fmt.Fprintf(os.Stderr, "\nbench: %v: cleaning up\n", s)
		b.cleanup()
		os.Exit(130)
	}()
	defer b.cleanup()

	logf("kubeshaper bench: kernel %s, %d CPUs, out %s", b.report.Host.Kernel, runtime.NumCPU(), cfg.Out)
	if err := b.setup(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: setup:", err)
		return 1
	}
	b.report.Topology = b.topo.describe()
	b.checkCLI()
	b.report.CLI = describeCLI(b.cfg.CLI, b.cliErr)

	for _, s := range cfg.Sections {
		b.parkIfStopping()
		switch s {
		case "rate":
			b.rateSection()
		case "latency":
			b.latencySection()
		case "loss":
			b.lossSection()
		case "pacing":
			b.pacingSection()
		}
		b.report.ElapsedS = time.Since(start).Seconds()
		if err := b.writeJSON(); err != nil {
			logf("writing JSON: %v", err)
		}
	}
	b.parkIfStopping()
	if cfg.Plots {
		for _, err := range b.writePlots() {
			logf("plot: %v", err)
		}
		if b.report.Pacing != nil {
			for _, err := range b.plotPacing() {
				logf("plot: %v", err)
			}
		}
	}
	b.report.ElapsedS = time.Since(start).Seconds()
	b.printf("\ntotal time: %s (%s, kubeshaper %s)\n", time.Since(start).Round(time.Second), b.report.Started, b.cfg.CLI)
	if err := b.writeTables(); err != nil {
		logf("writing tables: %v", err)
	}
	if err := b.writeJSON(); err != nil {
		logf("writing JSON: %v", err)
	}
	fmt.Printf("wrote %s\n", strings.Join(b.written, ", "))
	return 0
}

// replotMain redraws the PNGs and datapath.txt (and reprints the tables) of a datapath.json
// without measuring: bench replot docs/bench/datapath.json
func replotMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: bench replot DIR/datapath.json   (writes the PNGs into DIR)")
		return 2
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	var cfg config
	r := &report{Config: &cfg}
	if err := json.Unmarshal(data, r); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	cfg.Out = filepath.Dir(args[0])
	cfg.Duration = time.Duration(cfg.DurationS * float64(time.Second))
	cfg.PingInterval = time.Duration(cfg.PingEveryMs * float64(time.Millisecond))
	b := &bench{cfg: cfg, report: r}
	b.report.Config = &b.cfg
	if len(r.Rate) > 0 {
		b.printRate()
	}
	if len(r.Latency) > 0 {
		b.printLatency()
	}
	if len(r.Loss) > 0 {
		b.printLoss()
	}
	b.printf("\ntotal time: %s (%s, kubeshaper %s)\n", (time.Duration(r.ElapsedS) * time.Second).Round(time.Second), r.Started, cfg.CLI)
	failed := 0
	if err := b.writeTables(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		failed = 1
	}
	for _, err := range b.writePlots() {
		fmt.Fprintln(os.Stderr, "bench: plot:", err)
		failed = 1
	}
	fmt.Printf("\nwrote %s\n", strings.Join(b.written, ", "))
	return failed
}

// parkIfStopping blocks the main goroutine for good once a signal arrived:
// the signal handler cleans up and exits; nothing more is measured or
// written.
func (b *bench) parkIfStopping() {
	if b.stopping.Load() {
		select {}
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}
