package kfeature

import (
	"os"
	"testing"

	"github.com/cilium/ebpf/asm"
)

func TestParseVersion(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Version
	}{
		{"6.6", Version{6, 6, 0}},
		{"5.10.262", Version{5, 10, 262}},
		{"5.10.0-46-amd64", Version{5, 10, 0}},
		{"6.12.117+deb13-amd64", Version{6, 12, 117}},
		{"6.18.44-fc-v669", Version{6, 18, 44}},
		{"7.3.4", Version{7, 3, 4}},
	} {
		got, err := ParseVersion(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "6", "x.y", "1.2.3.4"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q): no error", bad)
		}
	}
	if !(Version{5, 10, 262}).Less(Version{6, 1, 0}) || (Version{6, 6, 0}).Less(Version{6, 6, 0}) {
		t.Error("Less is wrong")
	}
}

func TestKernelVersion(t *testing.T) {
	k, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	if k.Less(Version{4, 0, 0}) {
		t.Fatalf("kernel version %v looks wrong", k)
	}
	t.Logf("kernel %s (release %s)", k, Release())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("probes need root (netns, BPF)")
	}
}

// The features kubeshaper's tests depend on, each with the rule that
// decides between skip and failure. On the development host (6.18, no
// sch_fq): fq skips, tcx and the tc netns cookie pass. In the Debian
// guests: fq passes everywhere; tcx skips on 5.10 and 6.1; the netns
// cookie skips before 6.13.

func TestSchFQ(t *testing.T) {
	needRoot(t)
	SkipIfNotConfigured(t, "CONFIG_NET_SCH_FQ", HaveSchFQ())
}

func TestTCX(t *testing.T) {
	needRoot(t)
	SkipIfNotSupported(t, "6.6", HaveTCX())
}

func TestNetnsCookieInTC(t *testing.T) {
	needRoot(t)
	SkipIfNotSupported(t, "6.13", HaveTCHelper(asm.FnGetNetnsCookie))
}

// A probe's verdict must not depend on how often it is asked.
func TestProbesAreStable(t *testing.T) {
	needRoot(t)
	for range 2 {
		a, b := HaveSchFQ(), HaveSchFQ()
		if (a == nil) != (b == nil) {
			t.Fatalf("HaveSchFQ: %v then %v", a, b)
		}
	}
}

// SkipIfNotSupported must fail, not skip, on a kernel at least as new as
// the feature: run it against a fake test to see what it does.
func TestSkipOrFail(t *testing.T) {
	k, err := Kernel()
	if err != nil {
		t.Fatal(err)
	}
	missing := ErrNotSupported
	for _, c := range []struct {
		min      string
		err      error
		skipped  bool
		failed   bool
		scenario string
	}{
		{"1.0", nil, false, false, "supported"},
		{"99.0", missing, true, false, "missing on an older kernel: skip"},
		{k.String(), missing, false, true, "missing on a kernel that should have it: fail"},
		{"1.0", os.ErrPermission, false, true, "a probe error is no reason to skip"},
	} {
		rec := &recorder{TB: t}
		func() {
			defer func() { recover() }() // Skip/Fatal end the fake test
			SkipIfNotSupported(rec, c.min, c.err)
		}()
		if rec.skipped != c.skipped || rec.failed != c.failed {
			t.Errorf("%s: skipped %v failed %v, want %v %v", c.scenario, rec.skipped, rec.failed, c.skipped, c.failed)
		}
	}
}

// recorder is a testing.TB whose Skip and Fatal only record and unwind.
type recorder struct {
	testing.TB
	skipped, failed bool
}

type unwind struct{}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(string, ...any) {
	r.skipped = true
	panic(unwind{})
}
func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
	panic(unwind{})
}
func (r *recorder) Fatal(...any) {
	r.failed = true
	panic(unwind{})
}
