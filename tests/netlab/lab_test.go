package netlab

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLab: pods made with the defaults and with a spec reach each other
// through the node; a spec's static neighbours, prefix and IPv6 setting
// hold; ReplaceVeth gives a new host ifindex with the same addresses;
// Close leaves no netns of the lab's prefix behind.
func TestLab(t *testing.T) {
	l := New(t, "h14")
	a := l.AddPod("a")
	b, err := l.NewPod("b", PodSpec{
		HostVeth: l.Prefix + "vb", IP: net.IPv4(10, 214, 0, 2).To4(), HostIP: net.IPv4(10, 214, 0, 1).To4(),
		PrefixLen: 30, MTU: 1400, StaticNeighbours: true, NoIPv6: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rate, err := TCPRate(a, b, 200*time.Millisecond); err != nil || rate <= 0 {
		t.Fatalf("a to b: %v bit/s, %v", rate, err)
	}
	if out := l.In(b.Name, "ip", "-4", "neigh", "show", "dev", "eth0"); !strings.Contains(out, b.HostIP.String()) || !strings.Contains(out, "PERMANENT") {
		t.Errorf("pod b's neighbours: %q, want %s permanent", out, b.HostIP)
	}
	if out := l.In(l.Node, "ip", "-4", "neigh", "show", "dev", b.HostVeth); !strings.Contains(out, b.IP.String()) || !strings.Contains(out, "PERMANENT") {
		t.Errorf("node's neighbours on %s: %q, want %s permanent", b.HostVeth, out, b.IP)
	}
	if out := l.In(b.Name, "ip", "addr", "show", "eth0"); !strings.Contains(out, b.IP.String()+"/30") || !strings.Contains(out, "mtu 1400") || strings.Contains(out, "inet6") {
		t.Errorf("pod b's eth0: %q, want %s/30, mtu 1400, no IPv6", out, b.IP)
	}
	before := hostIndex(t, l, b)
	if err := l.ReplaceVeth(b); err != nil {
		t.Fatal(err)
	}
	if after := hostIndex(t, l, b); after == before {
		t.Errorf("ReplaceVeth kept ifindex %d", before)
	}
	if _, err := TCPRate(b, a, 100*time.Millisecond); err != nil {
		t.Errorf("after ReplaceVeth: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.Prefix) {
			t.Errorf("netns %s left after Close", e.Name())
		}
	}
}

func hostIndex(t *testing.T, l *Lab, p *Pod) int {
	t.Helper()
	h, err := l.nodeHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName(p.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Index
}
