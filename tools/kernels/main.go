// Command kernels runs kubeshaper's kernel-facing tests on several Linux
// kernels: Debian's kernel packages (downloaded with a private apt
// configuration, never installed), booted with qemu (TCG) on an initramfs
// of busybox and the modules the tests need, the host's root filesystem
// shared read-only over 9p so the tests run from the repository as on the
// host. See README.md.
//
//	kernels run   [-kernels "5.10 6.1 …"] [-pkgs "./pkg/datapath …"] [-run RE] [-skip RE] [-summary FILE] [-refresh] [-v]
//	kernels fetch [-refresh] LINE…
//	kernels exec  [-kernel LINE] TEST-BINARY [ARGS…]   (go test -exec, via qemu-exec)
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultKernels is what `make test-kernels` runs (and CI).
const DefaultKernels = "5.10 6.1 6.12 6.18 7.3"

// DefaultPackages are the packages whose tests touch the kernel.
const DefaultPackages = "./pkg/datapath ./pkg/attach ./pkg/podnet ./pkg/shaper ./cmd/kubeshaper ./tests/kfeature ./tests/guest ./tests/cni"

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "kernels: "+format+"\n", a...)
}

func cacheDir() (string, error) {
	d := os.Getenv("KERNELS_CACHE")
	if d == "" {
		d = ".cache/kernels"
	}
	d, err := filepath.Abs(d)
	if err != nil {
		return "", err
	}
	return d, os.MkdirAll(d, 0o755)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	rc := 0
	switch os.Args[1] {
	case "run":
		rc, err = cmdRun(os.Args[2:])
	case "fetch":
		err = cmdFetch(os.Args[2:])
	case "exec":
		rc, err = cmdExec(os.Args[2:])
	case "relay": // the opt-in network's forward (apiserver.go)
		err = cmdRelay(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		logf("%v", err)
		if rc == 0 {
			rc = 1
		}
	}
	os.Exit(rc)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kernels run   [-kernels "`+DefaultKernels+`"] [-pkgs "./pkg/datapath …"] [-run REGEXP] [-skip REGEXP] [-summary FILE] [-refresh] [-v]
  kernels fetch [-refresh] LINE…
  kernels exec  [-kernel LINE] TEST-BINARY [ARGS…]
Environment: KERNELS_CACHE (default .cache/kernels), QEMU_ACCEL (tcg),
QEMU_EXTRA_ARGS, KERNEL (exec's default line), KERNELS_TIMEOUT (per guest),
KERNELS_APISERVER=IP:PORT (exec only, opt-in: a NIC whose only way out is
the guest's `+GuestAPIServerAddr+` forwarded to IP:PORT on the host).
`)
	os.Exit(2)
}

func cmdFetch(args []string) error {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	refresh := fs.Bool("refresh", false, "re-resolve each line against fresh package lists")
	fs.Parse(args)
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	lines := fs.Args()
	if len(lines) == 0 {
		lines = strings.Fields(DefaultKernels)
	}
	for _, l := range lines {
		k, err := ensureKernel(cache, l, *refresh)
		if err != nil {
			return err
		}
		fmt.Printf("%s\t%s\t%s\t%s\n", l, k.Release, k.Version, k.Root)
	}
	return nil
}

// prepare returns the kernel of a line and a fresh initramfs for it
// (with the NIC's driver if withNet: a file of its own, so that test runs
// at the same time keep theirs as it always was).
func prepare(cache, line string, refresh, withNet bool) (*kernel, string, error) {
	k, err := ensureKernel(cache, line, refresh)
	if err != nil {
		return nil, "", err
	}
	initrd := filepath.Join(cache, "k", k.Release, "initramfs.cpio")
	var extra []string
	if withNet {
		initrd = filepath.Join(cache, "k", k.Release, "initramfs-net.cpio")
		extra = netModules
	}
	if err := buildInitramfs(k, initrd, extra); err != nil {
		return nil, "", fmt.Errorf("%s: initramfs: %w", k.Release, err)
	}
	return k, initrd, nil
}

func guestTimeout(def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KERNELS_TIMEOUT")); err == nil && d > 0 {
		return d
	}
	return def
}

// cmdExec runs one test binary in a guest, as `go test -exec` asks: the
// working directory (the package's) and arguments are kept, the output is
// the test's, and the exit code is the test's.
func cmdExec(args []string) (int, error) {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	line := fs.String("kernel", os.Getenv("KERNEL"), "kernel line or ABI (default $KERNEL, else 5.10)")
	fs.Parse(args)
	if fs.NArg() < 1 {
		usage()
	}
	if *line == "" {
		*line = "5.10"
	}
	cache, err := cacheDir()
	if err != nil {
		return 1, err
	}
	fwd, err := apiserverForward()
	if err != nil {
		return 1, err
	}
	k, initrd, err := prepare(cache, *line, false, fwd != "")
	if err != nil {
		return 1, err
	}
	job, err := newJobDir(cache)
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(job)
	bin := filepath.Join(job, filepath.Base(fs.Arg(0)))
	if err := copyFile(fs.Arg(0), bin); err != nil {
		return 1, err
	}
	cwd, _ := os.Getwd()
	var script strings.Builder
	script.WriteString(guestEnv(nil))
	fmt.Fprintf(&script, "cd %s || exit 126\n", shellQuote(cwd))
	q := []string{shellQuote(bin)}
	timeout := 10 * time.Minute
	for _, a := range fs.Args()[1:] {
		q = append(q, shellQuote(a))
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				timeout = d + 2*time.Minute
			}
		}
	}
	fmt.Fprintf(&script, "exec %s\n", strings.Join(q, " "))
	runSh := filepath.Join(job, "run.sh")
	if err := os.WriteFile(runSh, []byte(script.String()), 0o644); err != nil {
		return 1, err
	}
	console := filepath.Join(cache, "logs", "exec-"+k.Release+".console.log")
	os.MkdirAll(filepath.Dir(console), 0o755)
	fmt.Fprintf(os.Stderr, "kernels: %s (%s) in qemu\n", k.Release, k.short())
	rc, err := boot(bootOpts{
		k: k, initrd: initrd, job: runSh, console: console, apiserver: fwd,
		expose:  []string{job, cwd},
		timeout: guestTimeout(timeout),
		line: func(l string) {
			if !strings.HasPrefix(l, "KS-GUEST: ") {
				fmt.Println(l)
			}
		},
	})
	if err != nil {
		return 1, err
	}
	return rc, nil
}
