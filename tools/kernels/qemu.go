package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The guest: TCG (no usable KVM for stock kernels here), 2 vCPUs, 1 GiB, no
// network device (tests build their own in netns), the host's root
// filesystem read-only over 9p, test output on ttyS0 and the kernel's
// console on ttyS0 (a log file, with the firmware's output).
const exitMarker = "KS-GUEST-EXIT "

type bootOpts struct {
	k      *kernel
	initrd string
	job    string // script the guest runs (a host path, seen through 9p)
	// expose are host directories the guest must see at their own path
	// although it mounts its own filesystems over them (/tmp, /run…).
	expose  []string
	console string // kernel console log
	// apiserver is KERNELS_APISERVER (HOST:PORT): the guest gets a NIC
	// whose only way out leads there (apiserver.go); "" for none.
	apiserver string
	timeout   time.Duration
	line      func(string) // each line the job prints
}

func qemuArgs(o bootOpts) []string {
	accel := os.Getenv("QEMU_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	// The TSC, not the HPET the kernel picks under TCG: reading the HPET is
	// an emulated MMIO access and a syscall each time (no vDSO), and the Go
	// runtime reads the clock constantly.
	cmdline := "console=ttyS0 loglevel=4 panic=-1 clocksource=tsc tsc=reliable " + os.Getenv("KERNELS_APPEND") + " ks.job=" + o.job
	if guestCPUs() > maxCPUsAtBoot {
		// Boot on one CPU; init.sh onlines the others before the job.
		// With 64 or 192 vCPUs running while the kernel live-patched its
		// text at boot, TCG panicked: multi-threaded, an int3 Oops in
		// sched_clock_cpu (a static key flipped under the other vCPUs,
		// 1 of 5 64-CPU boots and a 192-CPU one); single-threaded
		// (tcg,thread=single), registers corrupted at 192 vCPUs (2 of 2).
		cmdline += " maxcpus=1"
	}
	var shares []string
	for i, d := range hiddenInGuest(o.expose) {
		tag := fmt.Sprintf("ks%d", i)
		shares = append(shares, "-virtfs", "local,path="+d+",mount_tag="+tag+",security_model=none,readonly=on,multidevs=remap")
		cmdline += " ks.mount=" + tag + ":" + d
	}
	args := []string{
		"-accel", accel, "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nodefaults", "-nographic", "-no-reboot", "-nic", "none",
		"-kernel", o.k.vmlinuz(), "-initrd", o.initrd,
		"-append", cmdline,
		"-serial", "file:" + o.console, "-serial", "stdio",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
	}
	args = append(args, shares...)
	if o.apiserver != "" {
		self, _ := os.Executable()
		args = append(args, netArgs(o.apiserver, self)...)
	}
	return append(args, strings.Fields(os.Getenv("QEMU_EXTRA_ARGS"))...)
}

// maxCPUsAtBoot is the most CPUs a guest boots with (see qemuArgs).
const maxCPUsAtBoot = 8

// guestCPUs is the guest's CPU count: the runner's -smp 2, or the last
// -smp of QEMU_EXTRA_ARGS (qemu takes the last).
func guestCPUs() int {
	n := 2
	f := strings.Fields(os.Getenv("QEMU_EXTRA_ARGS"))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-smp" {
			v, _, _ := strings.Cut(f[i+1], ",")
			if c, err := strconv.Atoi(strings.TrimPrefix(v, "cpus=")); err == nil {
				n = c
			}
		}
	}
	return n
}

// guestMounts are where the guest mounts its own filesystems over the
// host's root (see init.sh).
var guestMounts = []string{"/tmp", "/run", "/dev", "/proc", "/sys"}

// hiddenInGuest returns those of dirs (resolved) that a guest mount hides,
// outermost first and without duplicates.
func hiddenInGuest(dirs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		for _, m := range guestMounts {
			if (d == m || strings.HasPrefix(d, m+"/")) && !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	// A directory inside another exposed one needs no share of its own.
	var res []string
	for _, d := range out {
		inner := false
		for _, e := range out {
			if e != d && strings.HasPrefix(d, e+"/") {
				inner = true
			}
		}
		if !inner {
			res = append(res, d)
		}
	}
	return res
}

// boot runs one guest to completion and returns the job's exit code.
func boot(o bootOpts) (int, error) {
	cmd := exec.Command("qemu-system-x86_64", qemuArgs(o)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return -1, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("starting qemu-system-x86_64 (install qemu-system-x86): %w", err)
	}
	timer := time.AfterFunc(o.timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()

	rc := -1
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		l = strings.ReplaceAll(l, "\r", "")
		if i := strings.Index(l, exitMarker); i >= 0 {
			if n, err := strconv.Atoi(strings.TrimSpace(l[i+len(exitMarker):])); err == nil {
				rc = n
				if i > 0 {
					o.line(l[:i])
				}
				continue
			}
		}
		o.line(l)
	}
	werr := cmd.Wait()
	if rc >= 0 {
		return rc, nil
	}
	msg := "the guest stopped without reporting an exit code"
	if !timer.Stop() {
		msg = fmt.Sprintf("the guest did not finish within %s and was stopped", o.timeout)
	}
	tail := consoleTail(o.console, 40)
	return -1, fmt.Errorf("%s (qemu: %v %s)\nkernel console, last lines:\n%s", msg, werr, strings.TrimSpace(stderr.String()), tail)
}

func consoleTail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(data), "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// newJobDir makes a fresh directory under the cache (the guest sees it at
// the same path through the host's root).
func newJobDir(cache string) (string, error) {
	b := make([]byte, 6)
	rand.Read(b)
	dir := filepath.Join(cache, "jobs", time.Now().Format("20060102-150405")+"-"+hex.EncodeToString(b))
	return dir, os.MkdirAll(dir, 0o755)
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// guestEnv is the environment of the tests in the guest: a clean one plus
// the caller's kubeshaper and Go runtime settings.
func guestEnv(extra map[string]string) string {
	var b strings.Builder
	b.WriteString("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp KUBESHAPER_IN_GUEST=1\n")
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KUBESHAPER_") || k == "GOTRACEBACK" || k == "GODEBUG" || k == "GOMAXPROCS" {
			if _, over := extra[k]; !over {
				fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
			}
		}
	}
	for k, v := range extra {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	return b.String()
}

// copyFile copies (or hard-links) src to dst, keeping it executable.
func copyFile(src, dst string) error {
	if r, err := filepath.EvalSymlinks(src); err == nil {
		src = r
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var errUsage = errors.New("usage")
