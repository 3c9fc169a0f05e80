package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/flowexport"
	"github.com/kubeshaper/kubeshaper/pkg/rules"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/bounds"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// monitorWorld is one agent with /metrics and flow export over three pods:
// web (a Deployment's pod), db (a bare pod) and quiet (opted out).
type monitorWorld struct {
	*agentenv.World
	ag          *agentenv.Agent
	dp          *datapath.Datapath
	bpffs, pins string // the CLI's bpffs base, and the agent's pin dir under it
	export      string // --flow-export file
	a, b, c     *netlab.Pod
	a6, b6      net.IP
}

const webPod = "web-5d4f7c9b8-x7k2p"

func newMonitorWorld(t *testing.T, extra ...string) *monitorWorld {
	w := &monitorWorld{World: newWorld(t)}
	w.a, w.b, w.c = w.AddPod("a"), w.AddPod("b"), w.AddPod("c")
	w.a6, _ = addIPv6(t, w.World, w.a, 1)
	w.b6, _ = addIPv6(t, w.World, w.b, 2)
	ownedPod(t, w.World, w.a, webPod, map[string]string{"app": "web", "pod-template-hash": "5d4f7c9b8"},
		metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f7c9b8"})
	w.Pod(w.b, "db", map[string]string{"app": "db"}, nil)
	w.Pod(w.c, "quiet", nil, map[string]string{"kubeshaper.io/monitor": "false"})

	// Pins where the node CLI finds them: <bpffs>/kubeshaper/netns-<inode>-<cookie
	// of the node netns>, with the World's pin dir as the bpffs.
	pins, err := datapath.PinDirOfNetns(w.PinDir, w.NodeNetns())
	if err != nil {
		t.Fatal(err)
	}
	w.bpffs = w.PinDir
	w.pins = pins
	w.export = filepath.Join(t.TempDir(), "flows.jsonl")
	args := append([]string{"--flow-export", w.export, "--flow-idle", "8s", "--flow-export-interval", "1s",
		"--rate-window", "4s", "--rate-sample", "1s"}, extra...)
	w.ag = w.StartAgent(agentenv.Options{Metrics: true, BPFFS: w.pins, Args: args, LogLevel: "info"})
	w.Eventually(15*time.Second, "filters on web and db", func() (bool, string) {
		return w.Filters(w.a) == 2 && w.Filters(w.b) == 2, fmt.Sprintf("web %d, db %d", w.Filters(w.a), w.Filters(w.b))
	})
	dp, err := datapath.Open(w.pins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	w.dp = dp
	return w
}

func (w *monitorWorld) counters(p *netlab.Pod, dir rules.Direction) datapath.Counters {
	w.T.Helper()
	c, ok, err := w.dp.Counters(datapath.KeyOf(w.Ifindex(p), dir))
	if err != nil || !ok {
		w.T.Fatalf("counters of %s %s: ok=%v err=%v", p.Name, dir, ok, err)
	}
	return c
}

func (w *monitorWorld) waitRule(p *netlab.Pod, dir rules.Direction, want string) {
	w.T.Helper()
	w.Eventually(10*time.Second, fmt.Sprintf("%s %s rule %q", p.Name, dir, want), func() (bool, string) {
		c, ok, err := w.dp.Lookup(datapath.KeyOf(w.Ifindex(p), dir))
		return err == nil && ok && strings.HasPrefix(c.String(), want), c.String()
	})
}

// snapshot is the veths' own counters and kubeshaper's, read together
// while no packet moves (the veths' counters are the same before and
// after kubeshaper's are read, and were still for 200 ms before).
type snapshot struct {
	veth map[*netlab.Pod]linkStats
	ks   map[*netlab.Pod][2]datapath.Counters
}

func (w *monitorWorld) quietSnapshot(pods ...*netlab.Pod) snapshot {
	w.T.Helper()
	read := func() map[*netlab.Pod]linkStats {
		m := map[*netlab.Pod]linkStats{}
		for _, p := range pods {
			m[p] = vethStats(w.T.(*testing.T), w.World, p)
		}
		return m
	}
	same := func(x, y map[*netlab.Pod]linkStats) bool {
		for k := range x {
			if x[k] != y[k] {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		s1 := read()
		time.Sleep(200 * time.Millisecond)
		s2 := read()
		if !same(s1, s2) {
			continue
		}
		ks := map[*netlab.Pod][2]datapath.Counters{}
		for _, p := range pods {
			ks[p] = [2]datapath.Counters{w.counters(p, rules.Egress), w.counters(p, rules.Ingress)}
		}
		if same(s2, read()) {
			return snapshot{veth: s2, ks: ks}
		}
	}
	w.T.Fatal("the veths never went quiet for 200 ms")
	return snapshot{}
}

func sub(a, b datapath.Counters) datapath.Counters {
	var d datapath.Counters
	d.Packets, d.Bytes = a.Packets-b.Packets, a.Bytes-b.Bytes
	for i := range a.DropPackets {
		d.DropPackets[i], d.DropBytes[i] = a.DropPackets[i]-b.DropPackets[i], a.DropBytes[i]-b.DropBytes[i]
	}
	return d
}

func (s snapshot) delta(before snapshot, p *netlab.Pod) (veth linkStats, egress, ingress datapath.Counters) {
	a, b := s.veth[p], before.veth[p]
	veth = linkStats{a.rxPackets - b.rxPackets, a.rxBytes - b.rxBytes, a.txPackets - b.txPackets, a.txBytes - b.txBytes}
	return veth, sub(s.ks[p][0], before.ks[p][0]), sub(s.ks[p][1], before.ks[p][1])
}

// checkAgainstVeth: kubeshaper's pod egress (host veth tc ingress) sees
// exactly what the veth received; its pod ingress (host veth tc egress)
// minus what it dropped is exactly what the veth transmitted. Bytes are
// the same frame bytes on both sides (no GSO in these tests' UDP).
func checkAgainstVeth(t *testing.T, name string, veth linkStats, eg, in datapath.Counters) {
	t.Helper()
	inDropP, inDropB := in.Dropped()
	t.Logf("%s: veth rx %d pkts %d B, tx %d pkts %d B; kubeshaper egress %d pkts %d B, ingress %d pkts %d B (%d dropped)",
		name, veth.rxPackets, veth.rxBytes, veth.txPackets, veth.txBytes, eg.Packets, eg.Bytes, in.Packets, in.Bytes, inDropP)
	if eg.Packets != veth.rxPackets || eg.Bytes != veth.rxBytes {
		t.Errorf("%s egress: kubeshaper counted %d packets %d bytes, the host veth received %d packets %d bytes",
			name, eg.Packets, eg.Bytes, veth.rxPackets, veth.rxBytes)
	}
	if in.Packets-inDropP != veth.txPackets || in.Bytes-inDropB != veth.txBytes {
		t.Errorf("%s ingress: kubeshaper passed %d packets %d bytes, the host veth transmitted %d packets %d bytes",
			name, in.Packets-inDropP, in.Bytes-inDropB, veth.txPackets, veth.txBytes)
	}
}

func noDrops(t *testing.T, what string, c datapath.Counters, except ...int) {
	t.Helper()
	for i, name := range datapath.ReasonNames {
		skip := false
		for _, e := range except {
			skip = skip || e == i
		}
		if !skip && c.DropPackets[i] != 0 {
			t.Errorf("%s: %d packets dropped as %q, want none", what, c.DropPackets[i], name)
		}
	}
}

// TestMonitoring proves what kubeshaper reports about pods against what
// independent counters saw: the veths' own statistics, the receiving
// socket, the sending pod's TCP MIB; then the same figures in the CLI, the
// flow export and /metrics, with workload labels, following pods' lives.
func TestMonitoring(t *testing.T) {
	w := newMonitorWorld(t)
	a, b, c := w.a, w.b, w.c

	t.Run("every pod is counted unless it opts out", func(t *testing.T) {
		if n := w.Filters(c); n != 0 {
			t.Errorf("the opted-out pod has %d filters", n)
		}
		for _, d := range rules.Directions {
			if _, ok, _ := w.dp.Counters(datapath.KeyOf(w.Ifindex(c), d)); ok {
				t.Errorf("the opted-out pod has %s counters", d)
			}
			if cfg, ok, _ := w.dp.Lookup(datapath.KeyOf(w.Ifindex(a), d)); !ok || cfg.String() != "monitor" {
				t.Errorf("web %s: %q, want monitor", d, cfg.String())
			}
		}
	})

	t.Run("counters equal the veths' own", func(t *testing.T) {
		sink := newUDPSink(t, b, b.IP)
		before := w.quietSnapshot(a, b)
		const n, size = 2000, 700
		sendUDP(t, a, sink.addr(), n, size, 20000)
		after := w.quietSnapshot(a, b)
		va, ea, ia := after.delta(before, a)
		vb, eb, ib := after.delta(before, b)
		checkAgainstVeth(t, "web", va, ea, ia)
		checkAgainstVeth(t, "db", vb, eb, ib)
		if ea.Packets < n || ib.Packets < n || ea.Bytes < n*(42+size) {
			t.Errorf("web sent %d packets (%d bytes), db received %d: want ≥ %d", ea.Packets, ea.Bytes, ib.Packets, n)
		}
		if got := sink.n.Load(); got != n {
			t.Logf("the socket received %d of %d datagrams", got, n)
		}
		for _, x := range []datapath.Counters{ea, ia, eb, ib} {
			noDrops(t, "monitor only", x)
		}
	})

	t.Run("injected drops are counted under their reason only", func(t *testing.T) {
		w.Annotate("pod", webPod, map[string]any{"kubeshaper.io/loss": "uniform egress 20%"})
		w.Annotate("pod", "db", map[string]any{"kubeshaper.io/bandwidth": "2mbit ingress"})
		w.waitRule(a, rules.Egress, "loss 20%")
		w.waitRule(b, rules.Ingress, "bandwidth 2mbit")
		sink := newUDPSink(t, b, b.IP)
		before := w.quietSnapshot(a, b)
		// 1000-byte frames at 1000/s: 8 Mbit/s offered, 6.4 after the loss,
		// four times db's limit.
		const n = 3000
		sendUDP(t, a, sink.addr(), n, 1000-42, 1000)
		after := w.quietSnapshot(a, b)
		va, ea, ia := after.delta(before, a)
		vb, eb, ib := after.delta(before, b)
		checkAgainstVeth(t, "web", va, ea, ia)
		checkAgainstVeth(t, "db", vb, eb, ib)
		lost, policed := ea.DropPackets[datapath.ReasonLoss], ib.DropPackets[datapath.ReasonBandwidth]
		got := uint64(sink.n.Load())
		t.Logf("sent %d: web's loss rule dropped %d (%.2f%%), db's 2mbit limit %d, the socket received %d",
			n, lost, 100*float64(lost)/float64(ea.Packets), policed, got)
		// 20 % of n, the exact binomial interval of tests/bounds (≈ ±4.9σ,
		// σ = √(n·0.2·0.8) ≈ 22).
		if lo, hi := bounds.Binomial(n, 0.2); int64(lost) < lo || int64(lost) > hi {
			t.Errorf("loss dropped %d of %d, want within [%d, %d] (20 %%; tests/bounds)", lost, n, lo, hi)
		}
		// Every drop is one of our 1000-byte frames, but for a stray small
		// packet of the pod's own (ARP, ND) that the 20 % rule may take too.
		if big := ea.DropBytes[datapath.ReasonLoss] / 1000; big > lost || lost-big > 3 {
			t.Errorf("loss drop bytes %d for %d packets of 1000 bytes", ea.DropBytes[datapath.ReasonLoss], lost)
		}
		if policed == 0 {
			t.Error("db's bandwidth limit dropped nothing")
		}
		noDrops(t, "web egress", ea, datapath.ReasonLoss)
		noDrops(t, "db ingress", ib, datapath.ReasonBandwidth)
		noDrops(t, "web ingress", ia)
		noDrops(t, "db egress", eb)
		// Independent of kubeshaper: what the socket got is what was sent
		// less the two rules' drops (± a stray ARP the policer may take).
		if diff := int64(n) - int64(lost) - int64(policed) - int64(got); diff < -3 || diff > 3 {
			t.Errorf("sent %d − lost %d − policed %d = %d, the socket received %d", n, lost, policed, n-int(lost)-int(policed), got)
		}
		w.Annotate("pod", webPod, map[string]any{"kubeshaper.io/loss": nil})
		w.Annotate("pod", "db", map[string]any{"kubeshaper.io/bandwidth": nil})
		w.waitRule(a, rules.Egress, "monitor")
		w.waitRule(b, rules.Ingress, "monitor")
	})

	seen := map[string]datapath.FlowStats{} // flows as read after each exchange
	var checked []string                    // the flows the 5-tuple subtest checked
	readFlows := func() {
		fl, err := w.dp.Flows()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fl {
			seen[flowName(f.Key, w.Ifindex(a), w.Ifindex(b))] = f.Stats
		}
	}
	t.Run("a flow per 5-tuple, TCP and UDP, IPv4 and IPv6", func(t *testing.T) {
		type check struct {
			name           string
			packets, bytes uint64
			flags          string
		}
		var checks []check
		// UDP: wire bytes are Ethernet 14 + IP (20 or 40) + UDP 8 + payload.
		for _, fam := range []struct {
			dst net.IP
			hdr uint64
		}{{b.IP, 42}, {w.b6, 62}} {
			sink := newUDPSink(t, b, fam.dst)
			for _, s := range []struct{ n, size int }{{100, 500}, {50, 200}} {
				src := sendUDP(t, a, sink.addr(), s.n, s.size, 5000)
				tuple := fmt.Sprintf("udp %s>%s", src, sink.addr())
				want := uint64(s.n) * (fam.hdr + uint64(s.size))
				checks = append(checks, check{"web egress " + tuple, uint64(s.n), want, ""}, check{"db ingress " + tuple, uint64(s.n), want, ""})
			}
			time.Sleep(100 * time.Millisecond)
			readFlows()
		}
		// TCP: the sender's own MIB counts the segments it sent (a GSO
		// packet as its segments), which is what kubeshaper must count.
		for _, fam := range []struct {
			dst net.IP
			hdr uint64 // Ethernet + IP + TCP with timestamps
		}{{b.IP, 14 + 20 + 32}, {w.b6, 14 + 40 + 32}} {
			const n = 4 << 20
			sa0, sb0 := tcpSnmp(t, w.World, a), tcpSnmp(t, w.World, b)
			client, server := sendTCP(t, a, b, fam.dst, n)
			time.Sleep(300 * time.Millisecond) // the last ACK
			sa1, sb1 := tcpSnmp(t, w.World, a), tcpSnmp(t, w.World, b)
			readFlows()
			// OutSegs leaves out retransmitted segments (the kernel counts
			// those in RetransSegs only); kubeshaper sees both. A loaded
			// machine drops now and then even between veths.
			retrans := sa1["RetransSegs"] - sa0["RetransSegs"]
			retransB := sb1["RetransSegs"] - sb0["RetransSegs"]
			segsA := sa1["OutSegs"] - sa0["OutSegs"] + retrans
			segsB := sb1["OutSegs"] - sb0["OutSegs"] + retransB
			up := fmt.Sprintf("tcp %s>%s", client, server)
			down := fmt.Sprintf("tcp %s>%s", server, client)
			t.Logf("TCP %s: web sent %d segments (%d of them retransmissions), db %d (%d)", up, segsA, retrans, segsB, retransB)
			checks = append(checks,
				check{"web egress " + up, segsA, 0, "FSPA"}, check{"db ingress " + up, segsA, 0, "FSPA"},
				check{"db egress " + down, segsB, 0, "FSA"}, check{"web ingress " + down, segsB, 0, "FSA"})
			// Bytes: every segment's headers, the SYN's 8 bytes of extra
			// options (MSS, SACK-permitted, window scale), and the payload
			// (retransmissions would add theirs: none expected on a veth).
			if retrans == 0 && retransB == 0 {
				wantUp := segsA*fam.hdr + 8 + n
				if g := seen["web egress "+up]; g.Bytes != wantUp {
					t.Errorf("web egress %s: %d bytes, want %d segments × %d + 8 + %d = %d", up, g.Bytes, segsA, fam.hdr, n, wantUp)
				}
				if g := seen["db egress "+down]; g.Bytes != segsB*fam.hdr+8 {
					t.Errorf("db egress %s: %d bytes, want %d segments × %d + 8 = %d", down, g.Bytes, segsB, fam.hdr, segsB*fam.hdr+8)
				}
			}
		}
		for _, ck := range checks {
			checked = append(checked, ck.name)
			g, ok := seen[ck.name]
			if !ok {
				t.Errorf("no flow %s; have:\n%s", ck.name, flowList(seen))
				continue
			}
			if g.Packets != ck.packets || (ck.bytes != 0 && g.Bytes != ck.bytes) {
				t.Errorf("%s: %d packets %d bytes, want %d packets %d bytes", ck.name, g.Packets, g.Bytes, ck.packets, ck.bytes)
			}
			if ck.flags != "" && flowexport.TCPFlagLetters(g.TcpFlags) != ck.flags {
				t.Errorf("%s: flags %s, want %s", ck.name, flowexport.TCPFlagLetters(g.TcpFlags), ck.flags)
			}
			if g.Drops != 0 {
				t.Errorf("%s: %d drops", ck.name, g.Drops)
			}
		}
		// What one direction of an interface saw, the other end's opposite
		// direction saw: a forwarded packet is the same packet.
		for name, g := range seen {
			if !strings.HasPrefix(name, "web egress ") || !(strings.Contains(name, "udp") || strings.Contains(name, "tcp")) {
				continue
			}
			// (Less what web's egress dropped: the loss rule's subtest.)
			other, ok := seen["db ingress "+strings.TrimPrefix(name, "web egress ")]
			if ok && (other.Packets != g.Packets-g.Drops || (g.Drops == 0 && other.Bytes != g.Bytes)) {
				t.Errorf("%s: %d/%d (%d dropped), at db's ingress %d/%d", name, g.Packets, g.Bytes, g.Drops, other.Packets, other.Bytes)
			}
		}

		// The node CLI reads the same records, named by pod.
		out := runCLI(t, w.World, w.bpffs, "flows", "--json", "--pod", w.NS+"/"+webPod)
		n := 0
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r flowexport.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Pod != webPod || r.Namespace != w.NS || r.HostVeth != a.HostVeth {
				t.Errorf("kubeshaper flows --pod %s listed %+v", webPod, r)
			}
			k := r.Direction + " " + r.Proto + " " + r.SrcAddr() + ">" + r.DstAddr()
			if g, ok := seen["web "+k]; ok && (r.Proto == "udp" || r.Proto == "tcp") {
				n++
				if g.Packets != r.Packets || g.Bytes != r.Bytes {
					t.Errorf("CLI %s: %d/%d, the map said %d/%d", k, r.Packets, r.Bytes, g.Packets, g.Bytes)
				}
			}
		}
		if n < 8 {
			t.Errorf("kubeshaper flows --pod listed %d of web's UDP/TCP flows, want ≥ 8:\n%s", n, out)
		}
		table := runCLI(t, w.World, w.bpffs, "status", "--window", "0")
		if !strings.Contains(table, w.NS+"/"+webPod) || !strings.Contains(table, w.NS+"/db") {
			t.Errorf("status does not name the pods:\n%s", table)
		}
	})

	t.Run("ended flows are exported with their workload", func(t *testing.T) {
		var recs []flowexport.Record
		// Idle for --flow-idle (8 s), read every second.
		w.Eventually(30*time.Second, "idle flows exported", func() (bool, string) {
			recs = readExport(t, w.export)
			got := map[string]bool{}
			for _, r := range recs {
				if r.End == flowexport.EndIdle {
					who := map[string]string{webPod: "web", "db": "db"}[r.Pod]
					got[who+" "+r.Direction+" "+r.Proto+" "+r.SrcAddr()+">"+r.DstAddr()] = true
				}
			}
			for _, name := range checked {
				if !got[name] {
					return false, name + " not exported"
				}
			}
			return len(checked) > 0, "nothing to wait for"
		})
		for _, r := range recs {
			who := map[string]string{webPod: "web", "db": "db"}[r.Pod]
			switch {
			case who == "web" && (r.Workload != "web" || r.WorkloadKind != "Deployment" || r.HostVeth != a.HostVeth),
				who == "db" && (r.Workload != "db" || r.WorkloadKind != "Pod" || r.HostVeth != b.HostVeth),
				r.Namespace != w.NS:
				t.Errorf("exported %+v: wrong pod labels", r)
			}
			k := who + " " + r.Direction + " " + r.Proto + " " + r.SrcAddr() + ">" + r.DstAddr()
			// Only the test's own flows are quiet after the snapshot: the
			// kernel's neighbour/router solicitations (ICMPv6) may send
			// again before their flow goes idle.
			ours := r.Proto == "tcp" || r.Proto == "udp"
			if g, ok := seen[k]; ok && ours && (g.Packets != r.Packets || g.Bytes != r.Bytes) {
				t.Errorf("exported %s: %d/%d, the map said %d/%d", k, r.Packets, r.Bytes, g.Packets, g.Bytes)
			}
			if r.LastSeen.Before(r.FirstSeen) || time.Since(r.FirstSeen) > 10*time.Minute {
				t.Errorf("exported %s: first %v last %v", k, r.FirstSeen, r.LastSeen)
			}
		}
		if fl, _ := w.dp.Flows(); len(fl) > 0 {
			for _, f := range fl {
				if name := flowName(f.Key, w.Ifindex(a), w.Ifindex(b)); strings.Contains(name, "udp") || strings.Contains(name, "tcp") {
					if _, ok := seen[name]; ok {
						t.Errorf("%s still in the map after its export", name)
					}
				}
			}
		}
	})

	t.Run("metrics: labels, requested vs achieved", func(t *testing.T) {
		m := scrape(t, w.ag.Metrics)
		for _, want := range []string{
			seriesKey("kubeshaper_pod_info", map[string]string{"namespace": w.NS, "pod": webPod, "workload": "web", "workload_kind": "Deployment", "uid": uidOf(t, w, webPod), "host_veth": a.HostVeth}),
			seriesKey("kubeshaper_pod_info", map[string]string{"namespace": w.NS, "pod": "db", "workload": "db", "workload_kind": "Pod", "uid": uidOf(t, w, "db"), "host_veth": b.HostVeth}),
			podSeries("kubeshaper_pod_packets_total", w.NS, webPod, "web", "Deployment", "egress"),
			podSeries("kubeshaper_pod_bytes_total", w.NS, "db", "db", "Pod", "ingress"),
			podSeries("kubeshaper_pod_drops_total", w.NS, webPod, "web", "Deployment", "egress", "reason=loss"),
			podSeries("kubeshaper_pod_drops_total", w.NS, "db", "db", "Pod", "ingress", "reason=bandwidth"),
			"kubeshaper_agent_pods{}", "kubeshaper_agent_queue_depth{}", "kubeshaper_agent_reconcile_errors_total{}",
			"kubeshaper_agent_last_sync_timestamp_seconds{}", "kubeshaper_agent_flows_exported_total{}",
		} {
			if _, ok := m[want]; !ok {
				t.Errorf("no series %s", want)
			}
		}
		for k := range m {
			if strings.Contains(k, "pod=quiet") {
				t.Errorf("a series of the opted-out pod: %s", k)
			}
		}
		// The counters on /metrics are the datapath's.
		k := podSeries("kubeshaper_pod_drops_total", w.NS, webPod, "web", "Deployment", "egress", "reason=loss")
		if got, want := m[k], float64(w.counters(a, rules.Egress).DropPackets[datapath.ReasonLoss]); got != want || got == 0 {
			t.Errorf("%s = %v, the map holds %v", k, got, want)
		}

		// Requested vs achieved: 16 Mbit/s offered to 8mbit + 10 % loss.
		w.Annotate("pod", webPod, map[string]any{"kubeshaper.io/bandwidth": "8mbit egress", "kubeshaper.io/loss": "uniform egress 10%"})
		w.waitRule(a, rules.Egress, "bandwidth 8mbit burst=500000 mode=drop; loss 10%")
		sink := newUDPSink(t, b, b.IP)
		done := make(chan error, 1)
		go func() { _, err := trySendUDP(a, sink.addr(), 16000, 1000-42, 2000); done <- err }()
		// The window (4-5 s) must start after the first second, which
		// drains the bucket that filled while idle (500 kB at 8 Mbit/s:
		// its burst passes at once, as a policer's burst does).
		time.Sleep(7 * time.Second)
		m = scrape(t, w.ag.Metrics)
		get := func(name string) (float64, bool) {
			v, ok := m[podSeries(name, w.NS, webPod, "web", "Deployment", "egress")]
			return v, ok
		}
		rate, _ := get("kubeshaper_rule_rate_bits")
		loss, _ := get("kubeshaper_rule_loss_ratio")
		arate, ok1 := get("kubeshaper_pod_achieved_rate_bits")
		aloss, ok2 := get("kubeshaper_pod_achieved_loss_ratio")
		t.Logf("requested %.1f Mbit/s and %.1f%% loss; achieved %.2f Mbit/s and %.2f%% loss", rate/1e6, loss*100, arate/1e6, aloss*100)
		if rate != 8e6 || math.Abs(loss-0.1) > 1e-9 || !ok1 || !ok2 {
			t.Fatalf("rule %v / %v, achieved present %v %v", rate, loss, ok1, ok2)
		}
		if arate < 0.8*8e6 || arate > 1.2*8e6 {
			t.Errorf("achieved %.2f Mbit/s, want 8 ± 20 %%", arate/1e6)
		}
		// ≥ 6000 packets in the window: σ ≤ 0.4 %.
		if aloss < 0.08 || aloss > 0.12 {
			t.Errorf("achieved loss %.2f%%, want 10 ± 2 %%", aloss*100)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, ok := m[podSeries("kubeshaper_rule_rate_bits", w.NS, "db", "db", "Pod", "ingress")]; ok {
			t.Error("db has no rate rule but a kubeshaper_rule_rate_bits series")
		}
	})

	t.Run("series and flows of a deleted pod go", func(t *testing.T) {
		w.DeletePod("db")
		w.Eventually(15*time.Second, "db's series gone", func() (bool, string) {
			m, err := tryScrape(w.ag.Metrics)
			if err != nil {
				return false, err.Error()
			}
			for k := range m {
				if strings.Contains(k, "pod=db,") || strings.Contains(k, "pod=db}") {
					return false, k
				}
			}
			_, web := m[podSeries("kubeshaper_pod_packets_total", w.NS, webPod, "web", "Deployment", "egress")]
			return web, "web's series missing"
		})
		// db's flows of the last subtest went out with db's name.
		w.Eventually(15*time.Second, "db's flows exported", func() (bool, string) {
			for _, r := range readExport(t, w.export) {
				if r.Pod == "db" && (r.End == flowexport.EndPodGone || r.End == flowexport.EndVanished) && r.Direction == "ingress" && r.Proto == "udp" {
					return true, ""
				}
			}
			return false, ""
		})
	})

	t.Run("exit exports what is left", func(t *testing.T) {
		w.ag.Stop(t)
		n := 0
		for _, r := range readExport(t, w.export) {
			if r.End == flowexport.EndShutdown {
				n++
			}
		}
		if n == 0 {
			t.Error("no flow exported at shutdown")
		}
	})
}

func uidOf(t *testing.T, w *monitorWorld, name string) string {
	t.Helper()
	p, err := w.CS.CoreV1().Pods(w.NS).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// flowName is "web egress udp 10.64.0.2:4000>10.64.0.6:5000".
func flowName(k datapath.FlowKey, web, db int) string {
	who := fmt.Sprintf("ifindex%d", k.Ifindex)
	switch int(k.Ifindex) {
	case web:
		who = "web"
	case db:
		who = "db"
	}
	r := flowexport.NewRecord(datapath.Flow{Key: k}, nil)
	return who + " " + r.Direction + " " + r.Proto + " " + r.SrcAddr() + ">" + r.DstAddr()
}

func flowList(m map[string]datapath.FlowStats) string {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k + " " + strconv.FormatUint(v.Packets, 10) + "/" + strconv.FormatUint(v.Bytes, 10) + "\n")
	}
	return b.String()
}

func readExport(t *testing.T, path string) []flowexport.Record {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []flowexport.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r flowexport.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written
		}
		out = append(out, r)
	}
	return out
}
