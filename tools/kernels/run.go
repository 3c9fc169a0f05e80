package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// pkgResult is one test binary's outcome on one kernel.
type pkgResult struct {
	pkg              string
	pass, fail, skip int
	failed           []string
	skipped          []string // "TestX: reason"
	rc               int
	done             bool
	dur              time.Duration
	output           []string
}

// kernelResult is one guest's outcome.
type kernelResult struct {
	k       *kernel
	pkgs    []*pkgResult
	figures []string
	dur     time.Duration
	err     error
}

func (r *kernelResult) totals() (pass, fail, skip int) {
	for _, p := range r.pkgs {
		pass += p.pass
		fail += p.fail
		skip += p.skip
		if p.fail == 0 && (!p.done || p.rc != 0) {
			fail++ // died without a failing test: panic, timeout, guest crash
		}
	}
	if r.err != nil && fail == 0 {
		fail++
	}
	return
}

var (
	testLine   = regexp.MustCompile(`^(\s*)--- (PASS|FAIL|SKIP): (\S+) \(`)
	figureLine = regexp.MustCompile(`FIGURE (.*)$`)
	logLine    = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// parser follows a guest's output: package markers, go test -v lines.
type parser struct {
	res     *kernelResult
	cur     *pkgResult
	started time.Time
	lastLog string // the last t.Log line of the running test: a skip's reason
	verbose bool
}

func (p *parser) line(l string) {
	if p.verbose {
		fmt.Println("  | " + l)
	}
	switch {
	case strings.HasPrefix(l, "KS-PKG-BEGIN "):
		p.cur = &pkgResult{pkg: strings.TrimPrefix(l, "KS-PKG-BEGIN "), rc: -1}
		p.res.pkgs = append(p.res.pkgs, p.cur)
		p.started = time.Now()
		return
	case strings.HasPrefix(l, "KS-PKG-END ") && p.cur != nil:
		f := strings.Fields(l)
		fmt.Sscan(f[len(f)-1], &p.cur.rc)
		p.cur.done = true
		p.cur.dur = time.Since(p.started)
		p.report(p.cur)
		p.cur = nil
		return
	case strings.HasPrefix(l, "KS-GUEST: "):
		if !p.verbose {
			fmt.Println("  " + l)
		}
		return
	}
	if m := figureLine.FindStringSubmatch(l); m != nil {
		p.res.figures = append(p.res.figures, m[1])
	}
	c := p.cur
	if c == nil {
		return
	}
	c.output = append(c.output, l)
	if m := testLine.FindStringSubmatch(l); m != nil {
		switch m[2] {
		case "PASS":
			c.pass++
		case "FAIL":
			c.fail++
			c.failed = append(c.failed, m[3])
		case "SKIP":
			c.skip++
			name := m[3]
			if p.lastLog != "" {
				name += ": " + p.lastLog
			}
			c.skipped = append(c.skipped, name)
		}
		p.lastLog = ""
		return
	}
	if strings.HasPrefix(l, "=== RUN") {
		p.lastLog = ""
	} else if m := logLine.FindStringSubmatch(l); m != nil {
		p.lastLog = m[1]
	}
}

func (p *parser) report(c *pkgResult) {
	status := "ok  "
	if c.fail > 0 || c.rc != 0 {
		status = "FAIL"
	}
	fmt.Printf("  %s %-16s %6.1fs  %d passed, %d failed, %d skipped\n", status, c.pkg, c.dur.Seconds(), c.pass, c.fail, c.skip)
	if status == "FAIL" && !p.verbose {
		for _, l := range c.output {
			fmt.Println("    | " + l)
		}
	}
}

func pkgName(pkg string) string {
	return strings.ReplaceAll(strings.TrimPrefix(filepath.Clean(pkg), "./"), "/", "_")
}

// buildTests compiles the packages' test binaries (static: nothing of the
// host's libc is needed in the guest) into a directory of this run's own
// under <cache>/tests, which the caller removes: two runs sharing a cache
// (a developer's and a benchmark's) must not replace each other's
// binaries under their running guests.
func buildTests(cache string, pkgs []string) (dir string, built []string, err error) {
	if err := os.MkdirAll(filepath.Join(cache, "tests"), 0o755); err != nil {
		return "", nil, err
	}
	if dir, err = os.MkdirTemp(filepath.Join(cache, "tests"), "run-"); err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			dir = ""
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", nil, err
	}
	env := append(os.Environ(), "CGO_ENABLED=0")
	for _, p := range pkgs {
		out := filepath.Join(dir, pkgName(p)+".test")
		cmd := exec.Command("go", "test", "-c", "-o", out, p)
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", nil, fmt.Errorf("go test -c %s: %v\n%s", p, err, b)
		}
		if _, err := os.Stat(out); err != nil {
			logf("%s has no tests: skipped", p)
			continue
		}
		built = append(built, p)
	}
	return dir, built, nil
}

func cmdRun(args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kernels := fs.String("kernels", DefaultKernels, "kernel lines (or exact ABIs) to test")
	pkgList := fs.String("pkgs", DefaultPackages, "packages whose tests run in each guest")
	runRE := fs.String("run", "", "only tests matching this regexp (go test -run)")
	skipRE := fs.String("skip", "", "leave out tests matching this regexp (go test -skip)")
	refresh := fs.Bool("refresh", false, "re-resolve kernel lines against fresh package lists")
	verbose := fs.Bool("v", false, "print every line the guests print")
	short := fs.Bool("short", false, "go test -short: the CI-sized run (fewer rates and delays in tests/guest)")
	testTimeout := fs.Duration("timeout", 6*time.Minute, "go test -timeout of each package in a guest")
	summaryOut := fs.String("summary", "", "also write the summary (results.md) to this file: a figure of this run, not of the last one to share the cache")
	fs.Parse(args)
	cache, err := cacheDir()
	if err != nil {
		return 1, err
	}
	repo, err := os.Getwd()
	if err != nil {
		return 1, err
	}
	start := time.Now()
	load0 := loadAverage()
	lines := strings.Fields(*kernels)
	if len(lines) == 0 {
		return 2, fmt.Errorf("no kernels given")
	}

	// Kernels first: a download failure is reported before any test runs.
	fetchStart := time.Now()
	ks := make([]*kernel, len(lines))
	for i, l := range lines {
		if ks[i], err = ensureKernel(cache, l, *refresh); err != nil {
			return 1, err
		}
	}
	fetchDur := time.Since(fetchStart)
	buildStart := time.Now()
	binDir, pkgs, err := buildTests(cache, strings.Fields(*pkgList))
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(binDir)
	buildDur := time.Since(buildStart)
	logf("kernels ready in %s, test binaries built in %s", fetchDur.Round(time.Second), buildDur.Round(time.Second))

	var results []*kernelResult
	for _, k := range ks {
		res := runKernel(cache, repo, binDir, k, pkgs, *runRE, *skipRE, *short, *testTimeout, *verbose)
		results = append(results, res)
	}
	total := time.Since(start)
	summary := fmt.Sprintf("\nMeasured %s on %d host cores, load average %s at the start and %s at the end (%s run).\n",
		start.UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), load0, loadAverage(), map[bool]string{true: "-short", false: "full"}[*short]) +
		summarize(results, fetchDur, buildDur, total)
	fmt.Print(summary)
	os.WriteFile(filepath.Join(cache, "results.md"), []byte(summary), 0o644)
	if *summaryOut != "" {
		if err := os.WriteFile(*summaryOut, []byte(strings.TrimPrefix(summary, "\n")), 0o644); err != nil {
			return 1, fmt.Errorf("writing the summary: %w", err)
		}
	}

	var pass, fail, skip int
	for _, r := range results {
		p, f, s := r.totals()
		pass, fail, skip = pass+p, fail+f, skip+s
	}
	fmt.Printf("kernels: %d passed, %d failed, %d skipped\n", pass, fail, skip)
	if fail > 0 {
		return 1, nil
	}
	return 0, nil
}

func runKernel(cache, repo, binDir string, k *kernel, pkgs []string, runRE, skipRE string, short bool, testTimeout time.Duration, verbose bool) *kernelResult {
	res := &kernelResult{k: k}
	start := time.Now()
	defer func() { res.dur = time.Since(start) }()
	fmt.Printf("== %s: %s (%s)\n", k.Line, k.short(), k.Release)
	_, initrd, err := prepare(cache, k.Line, false, false)
	if err != nil {
		res.err = err
		fmt.Printf("  FAIL %v\n", err)
		return res
	}
	job, err := newJobDir(cache)
	if err != nil {
		res.err = err
		return res
	}
	defer os.RemoveAll(job)
	var s strings.Builder
	// Every guest kernel is a Debian one, built with sch_fq as a module:
	// tests needing it must run, not skip (tests/kfeature).
	s.WriteString(guestEnv(map[string]string{"KUBESHAPER_KFEATURE_REQUIRE": "CONFIG_NET_SCH_FQ"}))
	for _, p := range pkgs {
		name := strings.TrimPrefix(filepath.Clean(p), "./")
		args := []string{shellQuote(filepath.Join(binDir, pkgName(p)+".test")), "-test.v", "-test.count=1",
			"-test.timeout=" + testTimeout.String()}
		if runRE != "" {
			args = append(args, "-test.run="+shellQuote(runRE))
		}
		if skipRE != "" {
			args = append(args, "-test.skip="+shellQuote(skipRE))
		}
		if short {
			args = append(args, "-test.short")
		}
		fmt.Fprintf(&s, "echo 'KS-PKG-BEGIN %s'\n", name)
		fmt.Fprintf(&s, "(cd %s && %s 2>&1)\n", shellQuote(filepath.Join(repo, name)), strings.Join(args, " "))
		fmt.Fprintf(&s, "echo \"KS-PKG-END %s $?\"\n", name)
	}
	runSh := filepath.Join(job, "run.sh")
	if err := os.WriteFile(runSh, []byte(s.String()), 0o644); err != nil {
		res.err = err
		return res
	}
	logDir := filepath.Join(cache, "logs")
	os.MkdirAll(logDir, 0o755)
	logPath := filepath.Join(logDir, k.Release+".log")
	logFile, _ := os.Create(logPath)
	defer logFile.Close()
	p := &parser{res: res, verbose: verbose}
	_, err = boot(bootOpts{
		k: k, initrd: initrd, job: runSh,
		console: filepath.Join(logDir, k.Release+".console.log"),
		expose:  []string{job, repo, binDir},
		timeout: guestTimeout(time.Duration(len(pkgs)+1) * (testTimeout + time.Minute)),
		line: func(l string) {
			fmt.Fprintln(logFile, l)
			p.line(l)
		},
	})
	if err != nil {
		res.err = err
		fmt.Printf("  FAIL %v\n", err)
	}
	if p.cur != nil { // a package that never ended
		p.cur.dur = time.Since(p.started)
		p.report(p.cur)
	}
	fmt.Printf("  %s in %s (log: %s)\n", k.Release, time.Since(start).Round(100*time.Millisecond), logPath)
	return res
}

// loadAverage is the 1-minute load average of the host (figures from a
// busy machine are worth less, and say so).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func summarize(results []*kernelResult, fetch, build, total time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| kernel | Debian package | passed | failed | skipped | time |\n|---|---|--:|--:|--:|--:|\n")
	for _, r := range results {
		p, f, s := r.totals()
		fmt.Fprintf(&b, "| %s | %s %s | %d | %d | %d | %.0fs |\n", r.k.short(), r.k.Package, r.k.Version, p, f, s, r.dur.Seconds())
	}
	fmt.Fprintf(&b, "\nkernels fetched in %s, tests built in %s, total %s (passed/failed/skipped count tests and subtests)\n",
		fetch.Round(time.Second), build.Round(time.Second), total.Round(time.Second))
	for _, r := range results {
		if len(r.figures) > 0 {
			fmt.Fprintf(&b, "\nFigures on %s:\n", r.k.short())
			for _, f := range r.figures {
				fmt.Fprintf(&b, "- %s\n", f)
			}
		}
	}
	for _, r := range results {
		var skipped, failed []string
		for _, p := range r.pkgs {
			for _, s := range p.skipped {
				skipped = append(skipped, p.pkg+" "+s)
			}
			for _, f := range p.failed {
				failed = append(failed, p.pkg+" "+f)
			}
			if !p.done {
				failed = append(failed, p.pkg+" (did not finish)")
			} else if p.rc != 0 && p.fail == 0 {
				failed = append(failed, fmt.Sprintf("%s (exit %d without a failing test)", p.pkg, p.rc))
			}
		}
		if r.err != nil {
			failed = append(failed, r.err.Error())
		}
		if len(failed) > 0 {
			fmt.Fprintf(&b, "\nFailed on %s:\n- %s\n", r.k.short(), strings.Join(failed, "\n- "))
		}
		if len(skipped) > 0 {
			fmt.Fprintf(&b, "\nSkipped on %s:\n- %s\n", r.k.short(), strings.Join(skipped, "\n- "))
		}
	}
	return b.String()
}
