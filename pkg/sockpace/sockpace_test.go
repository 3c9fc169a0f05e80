package sockpace

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// pacer loads the program with its pins in a fresh directory, attached.
func pacer(t *testing.T) (*Pacer, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	dir := "/sys/fs/bpf/kstest-ksp-" + hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Skipf("no bpffs: %v", err)
	}
	t.Cleanup(func() { Remove(dir); os.Remove(dir) })
	p, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Attach(); err != nil {
		t.Fatal(err)
	}
	return p, dir
}

func cookieOf(t *testing.T, pod *netlab.Pod) uint64 {
	t.Helper()
	var c uint64
	if err := podnet.Do(pod.Netns, func() (err error) { c, err = NetnsCookie(); return err }); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPacesEgressAndIngress(t *testing.T) {
	p, dir := pacer(t)
	lab := netlab.New(t, "kspc")
	a, b := lab.AddPod("a"), lab.AddPod("b")
	ipA, ipB := netip.MustParseAddr(a.IP.String()), netip.MustParseAddr(b.IP.String())
	const wire = 40e6
	payload := wire * 1448 / 1514
	// Egress rule on A: A's own sockets.
	if err := p.Set(101, []netip.Addr{ipA}, cookieOf(t, a), Rule{EgressBitsPerSec: wire}); err != nil {
		t.Fatal(err)
	}
	r, err := netlab.TCPRate(a, b, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("egress paced: %.2f Mbit/s payload (want %.2f)", r/1e6, payload/1e6)
	if r < payload*0.9 || r > payload*1.05 {
		t.Errorf("egress: %.2f Mbit/s, want %.2f ±5 %%", r/1e6, payload/1e6)
	}
	// Ingress rule on B, sender A on this node.
	if err := p.Set(101, nil, 0, Rule{}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddNetns(cookieOf(t, a), 101); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(102, []netip.Addr{ipB}, cookieOf(t, b), Rule{IngressBitsPerSec: wire}); err != nil {
		t.Fatal(err)
	}
	r, err = netlab.TCPRate(a, b, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ingress paced: %.2f Mbit/s payload", r/1e6)
	if r < payload*0.9 || r > payload*1.05 {
		t.Errorf("ingress: %.2f Mbit/s, want %.2f ±5 %%", r/1e6, payload/1e6)
	}
	// Removed: new sockets are not paced.
	if err := ClearIndex(dir, 102); err != nil {
		t.Fatal(err)
	}
	r, err = netlab.TCPRate(a, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unpaced: %.2f Mbit/s", r/1e6)
	st, err := Read(dir)
	t.Logf("state %+v %v", st, err)
}
