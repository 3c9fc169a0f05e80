// Package kfeature lets kubeshaper's tests depend on kernel features the
// way cilium/ebpf's internal/testutils does: a test probes for what it
// needs and SKIPS on a kernel too old to have it, but FAILS on a kernel new
// enough to have it, where a missing feature is a bug (in the probe, the
// test environment or kubeshaper) and must not hide behind a skip.
//
// Two kinds of features:
//   - version-gated ones, which every kernel from some version on has
//     (tcx: 6.6; bpf_get_netns_cookie in tc programs: 6.13):
//     SkipIfNotSupported(t, "6.6", HaveTCX());
//   - build-option ones, which a kernel may be built without at any version
//     (the fq qdisc, CONFIG_NET_SCH_FQ: absent on the development host,
//     a module in every Debian kernel): SkipIfNotConfigured(t,
//     "CONFIG_NET_SCH_FQ", HaveSchFQ()) reads the kernel's config and fails
//     when the option is y or m but the probe still fails.
//
// KUBESHAPER_KFEATURE_REQUIRE (a comma-separated list of option names, or
// "all") turns a skip for an unknown config into a failure: the multi-kernel
// runner knows every guest kernel has sch_fq.
package kfeature

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// ErrNotSupported is what a probe's error wraps when the running kernel
// lacks the feature (the same sentinel as cilium/ebpf's).
var ErrNotSupported = ebpf.ErrNotSupported

// RequireEnv lists build options the environment promises (see package doc).
const RequireEnv = "KUBESHAPER_KFEATURE_REQUIRE"

// Version is a kernel version, major.minor.patch.
type Version [3]uint32

// ParseVersion reads "6.6", "5.10.262" or a release like "5.10.0-46-amd64"
// (everything from the first character that is neither a digit nor a dot
// is ignored).
func ParseVersion(s string) (Version, error) {
	var v Version
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end >= 0 {
		s = s[:end]
	}
	parts := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Errorf("kernel version %q: want major.minor[.patch]", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return v, fmt.Errorf("kernel version %q: %w", s, err)
		}
		v[i] = uint32(n)
	}
	return v, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

// Less reports v < o.
func (v Version) Less(o Version) bool {
	for i := range v {
		if v[i] != o[i] {
			return v[i] < o[i]
		}
	}
	return false
}

// Kernel is the running kernel's version: LINUX_VERSION_CODE from the vDSO
// (the real sublevel even where uname says 5.10.0-46), else uname.
func Kernel() (Version, error) {
	if code, err := features.LinuxVersionCode(); err == nil && code != 0 {
		return Version{code >> 16, (code >> 8) & 0xff, code & 0xff}, nil
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Version{}, err
	}
	return ParseVersion(unix.ByteSliceToString(u.Release[:]))
}

// Release is uname -r.
func Release() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// SkipIfNotSupported returns when probeErr is nil; when it wraps
// ErrNotSupported it skips tb on kernels older than minKernel and fails tb
// on minKernel or newer; any other error fails tb (a probe that cannot
// tell is no reason to skip).
func SkipIfNotSupported(tb testing.TB, minKernel string, probeErr error) {
	tb.Helper()
	if probeErr == nil {
		return
	}
	if !errors.Is(probeErr, ErrNotSupported) {
		tb.Fatalf("feature probe failed: %v", probeErr)
	}
	min, err := ParseVersion(minKernel)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := Kernel()
	if err != nil {
		tb.Fatalf("reading the kernel version: %v", err)
	}
	if k.Less(min) {
		tb.Skipf("kernel %s (%s) < %s: %v", k, Release(), minKernel, probeErr)
	}
	tb.Fatalf("kernel %s (%s) is %s or newer, which has this feature, but: %v", k, Release(), minKernel, probeErr)
}

// SkipIfNotConfigured is SkipIfNotSupported for a feature that depends on
// a build option rather than a version: when probeErr wraps
// ErrNotSupported, it skips tb if the kernel's config says the option is
// not set, and fails tb if the option is y or m (the feature must work) or
// if the environment requires it (RequireEnv). An unknown config skips.
func SkipIfNotConfigured(tb testing.TB, option string, probeErr error) {
	tb.Helper()
	if probeErr == nil {
		return
	}
	if !errors.Is(probeErr, ErrNotSupported) {
		tb.Fatalf("feature probe failed: %v", probeErr)
	}
	val, src, err := ConfigOption(option)
	switch {
	case required(option):
		tb.Fatalf("%s is required here (%s=%s) but: %v", option, RequireEnv, os.Getenv(RequireEnv), probeErr)
	case err != nil:
		tb.Skipf("%v; kernel config unknown (%v)", probeErr, err)
	case val == "y" || val == "m":
		tb.Fatalf("kernel %s is built with %s=%s (%s) but: %v", Release(), option, val, src, probeErr)
	default:
		tb.Skipf("kernel %s is built without %s (%s): %v", Release(), option, src, probeErr)
	}
}

func required(option string) bool {
	for _, r := range strings.Split(os.Getenv(RequireEnv), ",") {
		r = strings.TrimSpace(r)
		if r == "all" || r == option {
			return true
		}
	}
	return false
}

// ConfigOption returns the value of a build option ("y", "m", a string, or
// "" when "is not set") from /proc/config.gz or /boot/config-<release>, and
// which of them it read.
func ConfigOption(option string) (val, source string, err error) {
	for _, src := range []string{"/proc/config.gz", "/boot/config-" + Release()} {
		f, err := os.Open(src)
		if err != nil {
			continue
		}
		defer f.Close()
		var r io.Reader = f
		if strings.HasSuffix(src, ".gz") {
			gz, err := gzip.NewReader(f)
			if err != nil {
				return "", src, err
			}
			r = gz
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, option+"="); ok {
				return strings.Trim(v, `"`), src, nil
			}
			if line == "# "+option+" is not set" {
				return "", src, nil
			}
		}
		return "", src, sc.Err()
	}
	return "", "", errors.New("neither /proc/config.gz nor /boot/config-" + Release() + " is readable")
}
