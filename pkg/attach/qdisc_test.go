package attach

import (
	"errors"
	"strings"
	"testing"
	"time"

	tc "github.com/florianl/go-tc"
)

func rootOf(t *testing.T, ns testNetns, ifindex int) (string, uint32) {
	t.Helper()
	var kind string
	var handle uint32
	ns.do(t, func() (err error) { kind, handle, err = RootQdisc(ifindex); return })
	return kind, handle
}

func TestRootTBF(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	if kind, handle := rootOf(t, ns, va); kind != "noqueue" || handle != 0 {
		t.Fatalf("fresh veth root: %s %#x, want the default noqueue 0", kind, handle)
	}

	// 10 Mbit/s, burst = rate × 200 ms, then changed in place to 20 Mbit/s.
	for _, rate := range []uint64{1_250_000, 2_500_000} {
		ns.do(t, func() error { return EnsureRootTBF(va, rate, rate/5, 50*time.Millisecond) })
		show := ns.in(t, "tc", "qdisc", "show", "dev", "ksa0", "root")
		t.Logf("tc qdisc show dev ksa0 root: %s", strings.TrimSpace(show))
		wantRate := map[uint64]string{1_250_000: "rate 10Mbit", 2_500_000: "rate 20Mbit"}[rate]
		if !strings.HasPrefix(show, "qdisc tbf 4b53: root") || !strings.Contains(show, wantRate) {
			t.Errorf("root after EnsureRootTBF(%d B/s): %q, want tbf 4b53: with %s", rate, show, wantRate)
		}
		if kind, handle := rootOf(t, ns, va); kind != "tbf" || handle != QdiscHandle {
			t.Errorf("RootQdisc = %s %#x, want tbf %#x", kind, handle, QdiscHandle)
		}
	}

	for i := 0; i < 2; i++ { // the second time there is nothing of ours
		ns.do(t, func() error { return RemoveRootQdiscIfOurs(va) })
	}
	if kind, handle := rootOf(t, ns, va); kind != "noqueue" || handle != 0 {
		t.Errorf("after RemoveRootQdiscIfOurs: %s %#x, want the default back", kind, handle)
	}
}

func TestRootQdiscOfAnotherTool(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	ns.in(t, "tc", "qdisc", "add", "dev", "ksa0", "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms")
	before := ns.in(t, "tc", "qdisc", "show", "dev", "ksa0", "root")

	var tbfErr, fqErr error
	ns.do(t, func() error {
		tbfErr = EnsureRootTBF(va, 1_250_000, 250_000, 50*time.Millisecond)
		fqErr = EnsureRootFQ(va, true, time.Second)
		return RemoveRootQdiscIfOurs(va)
	})
	for _, err := range []error{tbfErr, fqErr} {
		if !errors.Is(err, ErrForeignQdisc) {
			t.Errorf("over another tool's root tbf: %v, want ErrForeignQdisc", err)
		}
	}
	t.Log(tbfErr)
	if after := ns.in(t, "tc", "qdisc", "show", "dev", "ksa0", "root"); after != before {
		t.Errorf("foreign root qdisc changed:\n%s\nwas\n%s", after, before)
	}
}

// sch_fq is missing on the development host: EnsureRootFQ must say so in a
// way the agent can turn into a clear Event. Where the kernel has fq, the
// qdisc must be ours instead.
func TestRootFQ(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")

	var err error
	ns.do(t, func() error { err = EnsureRootFQ(va, true, 2*time.Second); return nil })
	if err == nil {
		t.Log("this kernel has sch_fq")
		if kind, handle := rootOf(t, ns, va); kind != "fq" || handle != QdiscHandle {
			t.Errorf("RootQdisc = %s %#x, want fq %#x", kind, handle, QdiscHandle)
		}
		ns.do(t, func() error { return RemoveRootQdiscIfOurs(va) })
		return
	}
	t.Log(err)
	if !errors.Is(err, ErrFQUnavailable) || !strings.Contains(err.Error(), "sch_fq") {
		t.Fatalf("EnsureRootFQ: %v; want ErrFQUnavailable naming sch_fq", err)
	}
	if !strings.Contains(err.Error(), "ksa0") {
		t.Errorf("error %q does not name the interface", err)
	}

	// Our tbf is given up for fq (a qdisc's kind cannot change in place);
	// without fq the device is left with its default qdisc.
	ns.do(t, func() error { return EnsureRootTBF(va, 1_250_000, 250_000, 50*time.Millisecond) })
	ns.do(t, func() error { err = EnsureRootFQ(va, false, 0); return nil })
	if !errors.Is(err, ErrFQUnavailable) {
		t.Errorf("EnsureRootFQ over our tbf: %v, want ErrFQUnavailable", err)
	}
	if kind, handle := rootOf(t, ns, va); handle != 0 {
		t.Errorf("root after failed fq: %s %#x, want the default", kind, handle)
	}
}

// TestDeletesToleratePeersThatGotThereFirst: another process (a second
// agent, an admin) removes a clsact or our root qdisc between our look and
// our delete. The kernel then answers ENOENT or, for an ingress slot that
// held one (now the built-in noop) and a root of another handle, EINVAL:
// both mean "already gone", which is what the delete wanted.
func TestDeletesToleratePeersThatGotThereFirst(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	va, _ := ns.veth(t, "ksa0", "ksb0")
	ns.in(t, "tc", "qdisc", "add", "dev", "ksa0", "clsact")
	ns.do(t, func() error { return EnsureRootTBF(va, 1_250_000, 250_000, 50*time.Millisecond) })
	ns.in(t, "tc", "qdisc", "del", "dev", "ksa0", "clsact")
	ns.in(t, "tc", "qdisc", "del", "dev", "ksa0", "root")
	// The deletes take a connection, as their callers hold one.
	withConn := func(fn func(conn *tc.Tc) error) {
		t.Helper()
		ns.do(t, func() error {
			conn, err := dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			return fn(conn)
		})
	}
	withConn(func(conn *tc.Tc) error {
		if err := deleteClsact(conn, va); err != nil {
			t.Errorf("deleting a clsact someone removed: %v", err)
		}
		if err := deleteRoot(conn, va, "tbf"); err != nil {
			t.Errorf("deleting our tbf someone removed: %v", err)
		}
		return nil
	})
	// A clsact that is present is deleted (the helper is not a no-op).
	ns.in(t, "tc", "qdisc", "add", "dev", "ksa0", "clsact")
	withConn(func(conn *tc.Tc) error { return deleteClsact(conn, va) })
	if out := ns.in(t, "tc", "qdisc", "show", "dev", "ksa0", "clsact"); strings.Contains(out, "clsact") {
		t.Errorf("clsact still there: %s", out)
	}
}
