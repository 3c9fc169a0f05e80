package cni

import (
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"

	"github.com/kubeshaper/kubeshaper/pkg/attach"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/bench"
	"github.com/kubeshaper/kubeshaper/tests/foreign"
	"github.com/kubeshaper/kubeshaper/tests/kubeenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
	"github.com/kubeshaper/kubeshaper/tools/bench/stats"
)

// The figures of issue 11 (make bench-cni → docs/bench/coexistence.json): the
// issue's bypasses reproduced with the node CLI (bin/kubeshaper) and what
// kubeshaper does about them, and the per-packet cost of the tcx path.

// benchReps windows of benchWindow each: the bucket's 0.5 s of credit can
// add at most 0.5/5 to one window, and TCP leaves it near empty.
const (
	benchReps   = 3
	benchWindow = 5 * time.Second
)

// cli runs bin/kubeshaper in the node netns.
func (f *fixture) cli(t *testing.T, args ...string) string {
	t.Helper()
	root, err := kubeenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "kubeshaper")
	if f.cliPins == "" {
		// A private bpffs for the CLI's pins (maps, tcx links, the
		// sock_ops link of socket pacing), removed with the test: the
		// default one would keep them after the node netns is gone.
		f.cliPins = netlab.PinDir(t, "kscn-cli")
	}
	args = append([]string{"--net=/var/run/netns/" + f.lab.Node, bin, "--bpffs", f.cliPins}, args...)
	cmd := exec.Command("nsenter", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubeshaper %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type cliDirection struct {
	Direction  string `json:"direction"`
	Enforced   bool   `json:"enforced"`
	Reason     string `json:"reason"`
	Attachment string `json:"attachment"`
}

// statusDuring runs `kubeshaper status --json --window 2s` while TCP flows
// from → to, and returns what it says of dev's direction.
func (f *fixture) statusDuring(t *testing.T, from, to *netlab.Pod, dev, dir string) cliDirection {
	t.Helper()
	done := make(chan struct{})
	go func() { netlab.TCPRate(from, to, 4*time.Second); close(done) }()
	time.Sleep(time.Second)
	out := f.cli(t, "status", "--json", "--window", "2s")
	<-done
	var st []struct {
		Interface  string         `json:"interface"`
		Directions []cliDirection `json:"directions"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, s := range st {
		for _, d := range s.Directions {
			if s.Interface == dev && d.Direction == dir {
				return d
			}
		}
	}
	t.Fatalf("status has no %s %s:\n%s", dev, dir, out)
	return cliDirection{}
}

// ratios measures the wire rate benchReps times, as ratios to the limit.
func ratios(t *testing.T, from, to *netlab.Pod) []float64 {
	var r []float64
	for range benchReps {
		r = append(r, wireRateOver(t, from, to, benchWindow)/limit)
	}
	sort.Float64s(r)
	return r
}

// measure is one side of a case, pod a sending to pod b: the wire rate's
// ratios, then what status says of dev's direction while traffic flows.
func (f *fixture) measure(t *testing.T, dev, dir string) ([]float64, cliDirection) {
	return ratios(t, f.a, f.b), f.statusDuring(t, f.a, f.b, dev, dir)
}

// after measures the case after its action (its median too).
func (c *cliCase) after(t *testing.T, f *fixture, dev, dir string) {
	c.After, c.StatusA = f.measure(t, dev, dir)
	c.Median = stats.Median(c.After)
}

type cliCase struct {
	Setup   string       `json:"setup"`
	Before  []float64    `json:"before_ratios,omitempty"`
	Status  cliDirection `json:"status_before"`
	Action  string       `json:"action"`
	After   []float64    `json:"after_ratios"`
	Median  float64      `json:"after_median"`
	StatusA cliDirection `json:"status_after"`
}

// TestBenchCLI: make bench-cni. The table, with the CLI.
func TestBenchCLI(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: make bench-cni")
	}
	if !attach.TCXSupported() {
		t.Skip("needs tcx")
	}
	res := map[string]any{"limit_bits": limit, "reps": benchReps, "window_s": benchWindow.Seconds(), "load_average_start": stats.LoadAvg()}
	egress := `bandwidth=50mbit egress pacing=off` // the tc hook alone, as in the issue (no socket pacing)

	// kubeshaper alone.
	{
		f := setup(t)
		f.cli(t, "iface", "apply", f.a.HostVeth, egress)
		c := cliCase{Setup: "kubeshaper alone", Action: "iface apply"}
		c.after(t, f, f.a.HostVeth, "egress")
		res["alone"] = c
		f.cli(t, "iface", "clear", f.a.HostVeth)
	}
	// The first bypass: a tcx program at the tail returning
	// TC_ACT_OK, added after the rule; the CLI then run again.
	{
		f := setup(t)
		ifa := f.iface(t, f.a)
		f.cli(t, "iface", "apply", f.a.HostVeth, egress)
		f.foreignTCX(t, foreign.OK, foreign.Target{}, ifa.Index, true, false)
		c := cliCase{Setup: "tcx program at the tail returning TC_ACT_OK, added after the rule (Cilium's cil_from_container)"}
		c.Before, c.Status = f.measure(t, f.a.HostVeth, "egress")
		c.Action = "iface apply again: kubeshaper moves to the tcx head"
		f.cli(t, "iface", "apply", f.a.HostVeth, egress)
		c.after(t, f, f.a.HostVeth, "egress")
		res["tcx_tail_ok"] = c
		f.cli(t, "iface", "clear", f.a.HostVeth)
	}
	// The second: a cls_bpf filter at pref 1 handle 1 added after ours.
	{
		f := setup(t)
		f.cli(t, "iface", "apply", f.a.HostVeth, egress)
		prog, err := foreign.Load(foreign.OK, foreign.Target{})
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		if err := foreign.AddClsBPF(f.lab.Node, f.a.HostVeth, "ingress", prog, filepath.Join(f.pins, "ok")); err != nil {
			t.Fatal(err)
		}
		c := cliCase{Setup: "cls_bpf filter at pref 1 handle 1 added after ours, returning TC_ACT_OK (Cilium's legacy slot)"}
		c.Before, c.Status = f.measure(t, f.a.HostVeth, "egress")
		c.Action = "iface apply again: kubeshaper moves to the tcx head, the other filter stays"
		f.cli(t, "iface", "apply", f.a.HostVeth, egress)
		c.after(t, f, f.a.HostVeth, "egress")
		res["clsbpf_pref1_after"] = c
		f.cli(t, "iface", "clear", f.a.HostVeth)
	}
	// Peer redirect: pod b's ingress rule on a path that skips its host
	// veth's tc egress.
	{
		f := setup(t)
		ifa, ifb := f.iface(t, f.a), f.iface(t, f.b)
		prog, err := foreign.Load(foreign.Peer, f.target(t, ifb))
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		var l link.Link
		f.inNode(t, func() (err error) { l, err = foreign.AttachTCX(ifa.Index, true, false, prog); return err })
		defer l.Close()
		in := `bandwidth=50mbit ingress`
		f.cli(t, "iface", "apply", f.b.HostVeth, in)
		c := cliCase{Setup: "bpf_redirect_peer into pod b from a program on pod a's host veth (BPF host routing), ingress rule on b's host veth"}
		c.Before, c.Status = f.measure(t, f.b.HostVeth, "ingress")
		c.Action = "iface apply --pod-side ingress: the rule runs on b's eth0 tc ingress"
		f.cli(t, "iface", "apply", "--pod-side", "ingress", f.b.HostVeth, in)
		c.after(t, f, f.b.HostVeth, "ingress")
		res["peer_redirect_ingress"] = c
		f.cli(t, "iface", "clear", f.b.HostVeth)
	}
	// A program the admin keeps at the tcx head: not displaced, reported.
	{
		f := setup(t)
		ifa := f.iface(t, f.a)
		f.foreignTCX(t, foreign.OK, foreign.Target{}, ifa.Index, true, true)
		f.cli(t, "iface", "apply", "--tcx-yield-to", foreign.OK, f.a.HostVeth, egress)
		c := cliCase{Setup: "tcx program at the head returning TC_ACT_OK that must not be displaced (--tcx-yield-to)", Action: "iface apply --tcx-yield-to foreign_ok"}
		c.after(t, f, f.a.HostVeth, "egress")
		if c.StatusA.Enforced {
			t.Errorf("yielded head program that ends the hook: status says enforced")
		}
		res["yield_head"] = c
		f.cli(t, "iface", "clear", f.a.HostVeth)
	}
	res["load_average_end"] = stats.LoadAvg()
	bench.Write(t, "docs/bench/coexistence.json", "cli", res)
}

// TestBenchCost: per-packet cost of kubeshaper's program on the tcx path
// against cls_bpf (and none), with real traffic: prog.Run runs the
// program alone and cannot see the hook's own cost. 64-byte UDP packets
// from pod a (sendmmsg batches) to pod b for 2 s, the modes alternated
// rounds times; ns/packet = 1e9 / packets per second delivered to b's
// eth0, a counted-only rule (the program runs in full: lookup, counters).
func TestBenchCost(t *testing.T) {
	if !bench.On() {
		t.Skip("a benchmark: make bench-cni")
	}
	if !attach.TCXSupported() {
		t.Skip("needs tcx")
	}
	const rounds = 7
	f := setup(t)
	ifc := f.iface(t, f.a)
	modes := []string{"none", "cls_bpf", "tcx"}
	ns := map[string][]float64{}
	for range rounds {
		for _, m := range modes {
			f.inNode(t, func() error { return f.sh.Clear(ifc) })
			if m != "none" {
				f.sh.PreferTCX = m == "tcx"
				var pol rules.Policy
				f.apply(t, ifc, pol)
				pl := f.placements(t, ifc)
				if got := strings.Contains(pl[rules.Egress].Attachment, "tcx"); got != (m == "tcx") {
					t.Fatalf("mode %s: attached %s", m, pl[rules.Egress].Attachment)
				}
			}
			pps := flood(t, f.a, f.b, 2*time.Second)
			ns[m] = append(ns[m], 1e9/pps)
		}
	}
	out := map[string]any{"rounds": rounds, "packet_bytes": 64, "seconds": 2, "load_average": stats.LoadAvg()}
	for _, m := range modes {
		sort.Float64s(ns[m])
		out[m+"_ns_per_packet"] = ns[m]
		out[m+"_median_ns"] = stats.Median(ns[m])
	}
	out["cls_bpf_minus_none_ns"] = stats.Median(ns["cls_bpf"]) - stats.Median(ns["none"])
	out["tcx_minus_none_ns"] = stats.Median(ns["tcx"]) - stats.Median(ns["none"])
	out["tcx_minus_cls_bpf_ns"] = stats.Median(ns["tcx"]) - stats.Median(ns["cls_bpf"])
	bench.Write(t, "docs/bench/coexistence.json", "cost", out)
}

// flood sends 64-byte UDP datagrams from → to's port 9 (nobody listens:
// the receiver's stack drops them) as fast as sendmmsg goes for d, and
// returns packets per second counted by to's eth0.
func flood(t *testing.T, from, to *netlab.Pod, d time.Duration) float64 {
	t.Helper()
	rx := func() uint64 {
		var n uint64
		podnet.Do(to.Netns, func() error {
			l, err := netlink.LinkByName("eth0")
			if err == nil {
				n = l.Attrs().Statistics.RxPackets
			}
			return err
		})
		return n
	}
	var c net.PacketConn
	if err := podnet.Do(from.Netns, func() (err error) { c, err = net.ListenPacket("udp4", from.IP.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	dst := &net.UDPAddr{IP: to.IP, Port: 9}
	msgs := make([]ipv4.Message, 64)
	payload := make([]byte, 64-42) // 64-byte frames: Ethernet 14 + IP 20 + UDP 8
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{payload}, Addr: dst}
	}
	// Warm the neighbour entry and the path.
	pc.WriteBatch(msgs[:1], 0)
	time.Sleep(50 * time.Millisecond)
	r0, t0 := rx(), time.Now()
	for time.Since(t0) < d {
		if _, err := pc.WriteBatch(msgs, 0); err != nil && !strings.Contains(err.Error(), "no buffer space") {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	r1 := rx()
	return float64(r1-r0) / time.Since(t0).Seconds()
}
