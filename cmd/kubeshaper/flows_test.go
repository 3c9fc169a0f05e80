package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/pkg/flowexport"
	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// setPodName records a pod name for the host veth, as the agent does.
func (c *cli) setPodName(veth, name string) {
	c.t.Helper()
	err := podnet.Do(c.node, func() error {
		dir, err := datapath.DefaultPinDir()
		if err != nil {
			return err
		}
		dp, err := datapath.Open(dir)
		if err != nil {
			return err
		}
		defer dp.Close()
		l, err := net.InterfaceByName(veth)
		if err != nil {
			return err
		}
		return dp.SetPodName(l.Index, name)
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// udpSink listens in netns on ip and counts datagrams.
func udpSink(t *testing.T, netns string, ip net.IP) (*net.UDPConn, *atomic.Int64) {
	t.Helper()
	var conn *net.UDPConn
	err := podnet.Do(netns, func() (err error) {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return conn, &n
}

// sendUDP sends count datagrams of size bytes from netns to dst, paced at
// perSec (0: as fast as possible), from one socket (one 5-tuple).
func sendUDP(t *testing.T, netns string, dst *net.UDPAddr, count, size, perSec int) *net.UDPAddr {
	t.Helper()
	var conn *net.UDPConn
	err := podnet.Do(netns, func() (err error) {
		conn, err = net.DialUDP("udp", nil, dst)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, size)
	start := time.Now()
	for i := range count {
		if perSec > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(perSec))); d > 0 {
				time.Sleep(d)
			}
		}
		if _, err := conn.Write(buf); err != nil {
			t.Fatalf("sending datagram %d: %v", i, err)
		}
	}
	return conn.LocalAddr().(*net.UDPAddr)
}

// sendUDPUntil sends datagrams at perSec until stop is closed (catching
// up after a stall, as a paced sender does).
func sendUDPUntil(t *testing.T, netns string, dst *net.UDPAddr, size, perSec int, stop <-chan struct{}) {
	var conn *net.UDPConn
	if err := podnet.Do(netns, func() (err error) {
		conn, err = net.DialUDP("udp", nil, dst)
		return err
	}); err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	buf := make([]byte, size)
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(perSec))); d > 0 {
			time.Sleep(d)
		}
		if _, err := conn.Write(buf); err != nil {
			t.Errorf("sending datagram %d: %v", i, err)
			return
		}
	}
}

func TestFlowsListsEveryFiveTuple(t *testing.T) {
	c, pod := newCLI(t)
	if code, _, stderr := c.run("iface", "apply", pod.HostVeth); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	c.setPodName(pod.HostVeth, "shop/web-1")
	sink, got := udpSink(t, c.node, pod.HostIP)
	dst := sink.LocalAddr().(*net.UDPAddr)
	const n, size = 50, 300
	src1 := sendUDP(t, pod.Netns, dst, n, size, 0)
	src2 := sendUDP(t, pod.Netns, dst, 2*n, size/2, 0)
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < 3*n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	code, out, stderr := c.run("flows", "--json")
	if code != 0 {
		t.Fatalf("flows --json: exit %d: %s", code, stderr)
	}
	byTuple := map[string]flowexport.Record{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r flowexport.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, sc.Text())
		}
		byTuple[r.Direction+" "+r.Proto+" "+r.SrcAddr()+">"+r.DstAddr()] = r
	}
	for _, tc := range []struct {
		src          *net.UDPAddr
		packets, len int
	}{{src1, n, size}, {src2, 2 * n, size / 2}} {
		k := "egress udp " + net.JoinHostPort(pod.IP.String(), strconv.Itoa(tc.src.Port)) + ">" + dst.String()
		r, ok := byTuple[k]
		if !ok {
			t.Errorf("no flow %s in\n%s", k, out)
			continue
		}
		// Wire bytes: Ethernet 14 + IPv4 20 + UDP 8 + payload.
		if r.Packets != uint64(tc.packets) || r.Bytes != uint64(tc.packets*(42+tc.len)) {
			t.Errorf("%s: %d packets %d bytes, want %d and %d", k, r.Packets, r.Bytes, tc.packets, tc.packets*(42+tc.len))
		}
		if r.Namespace != "shop" || r.Pod != "web-1" || r.HostVeth != pod.HostVeth || r.Family != 4 || r.Drops != 0 {
			t.Errorf("%s: %+v", k, r)
		}
		if age := time.Since(r.FirstSeen); age < -time.Second || age > 30*time.Second || r.LastSeen.Before(r.FirstSeen) {
			t.Errorf("%s: first seen %v, last %v", k, r.FirstSeen, r.LastSeen)
		}
	}

	// The table, one pod's, by name or namespace/name.
	for _, sel := range []string{"shop/web-1", "web-1"} {
		code, out, stderr = c.run("flows", "--pod", sel)
		if code != 0 || !strings.Contains(out, "shop/web-1") || !strings.Contains(out, strconv.Itoa(src1.Port)) || !strings.Contains(out, "PACKETS") {
			t.Errorf("flows --pod %s: exit %d\n%s%s", sel, code, out, stderr)
		}
	}
	if code, _, stderr = c.run("flows", "--pod", "shop/nope"); code != 2 || !strings.Contains(stderr, "shop/nope") {
		t.Errorf("flows --pod of an unknown pod: exit %d, %q", code, stderr)
	}
}

// TestStatusRequestedVsAchieved over-offers UDP to a rate- and loss-limited
// pod: the achieved rate must come out at the limit, the achieved loss at
// the rule's probability.
func TestStatusRequestedVsAchieved(t *testing.T) {
	c, pod := newCLI(t)
	if code, _, stderr := c.run("iface", "apply", pod.HostVeth, `bandwidth=8mbit egress burst=16kb`, `loss=uniform egress 10%`); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	c.setPodName(pod.HostVeth, "shop/web-1")
	sink, _ := udpSink(t, c.node, pod.HostIP)
	// 16 Mbit/s of 1000-byte datagrams: twice the limit after loss, from a
	// second before status starts until it has returned (in an emulated
	// guest starting the CLI alone can take seconds).
	// A small burst: with the default (rate × 500 ms) a sender stalled by a
	// loaded CPU refills the bucket and the 2 s window may see 1.25× the rate.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sendUDPUntil(t, pod.Netns, sink.LocalAddr().(*net.UDPAddr), 958, 2000, stop)
	}()
	time.Sleep(time.Second)
	code, out, stderr := c.run("status", "--json", "--window", "2s")
	close(stop)
	<-done
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var st []ifaceStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(st) != 1 || st[0].Pod != "shop/web-1" {
		t.Fatalf("status: %s", out)
	}
	eg := st[0].Directions[0]
	if eg.Direction != "egress" || eg.RateBits != 8e6 || eg.Achieved == nil || eg.Achieved.LossRatio == nil {
		t.Fatalf("egress: %s", out)
	}
	a := eg.Achieved
	t.Logf("requested 8 Mbit/s, 10%% loss; achieved %.2f Mbit/s, %.2f%% loss over %.2f s (%d packets)",
		a.RateBits/1e6, *a.LossRatio*100, a.WindowSeconds, a.Packets)
	if a.RateBits < 0.85*8e6 || a.RateBits > 1.15*8e6 {
		t.Errorf("achieved %.2f Mbit/s, want 8 ± 15 %%", a.RateBits/1e6)
	}
	// 10 % of ≥ 2000 packets: σ ≤ 0.7 %; 5σ.
	if *a.LossRatio < 0.065 || *a.LossRatio > 0.135 || a.Packets < 2000 {
		t.Errorf("achieved loss %.2f%% over %d packets, want 10 ± 3.5 %%", *a.LossRatio*100, a.Packets)
	}
	code, out, _ = c.run("status", "--window", "0")
	if code != 0 || !strings.Contains(out, "shop/web-1") || !strings.Contains(out, "REQUESTED") || !strings.Contains(out, "8mbit loss=10%") {
		t.Errorf("status table:\n%s", out)
	}
}
