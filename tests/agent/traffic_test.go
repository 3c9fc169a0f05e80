package agent

// Helpers of the monitoring tests: traffic between netns pods over IPv4
// and IPv6, the kernel's own counters to check kubeshaper's against, and
// a reader of the agent's /metrics.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
	"github.com/kubeshaper/kubeshaper/tests/agentenv"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// addIPv6 gives a pod fd00:0:0:<n>::2/64 on eth0 and its host veth
// fd00:0:0:<n>::1/64 (no DAD), routes the pod's IPv6 through the node and
// returns both addresses.
func addIPv6(t *testing.T, w *agentenv.World, p *netlab.Pod, n int) (pod, host net.IP) {
	t.Helper()
	pod = net.ParseIP(fmt.Sprintf("fd00:0:0:%x::2", n))
	host = net.ParseIP(fmt.Sprintf("fd00:0:0:%x::1", n))
	w.Lab.In(w.Lab.Node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	w.Lab.In(w.Lab.Node, "ip", "-6", "addr", "add", host.String()+"/64", "dev", p.HostVeth, "nodad")
	w.Lab.In(p.Name, "ip", "-6", "addr", "add", pod.String()+"/64", "dev", "eth0", "nodad")
	w.Lab.In(p.Name, "ip", "-6", "route", "add", "default", "via", host.String())
	return pod, host
}

// ownedPod creates a running Pod whose controller is a ReplicaSet (or
// another owner kind), as the Deployment controller would make it; there
// is no controller here, so the owner need not exist.
func ownedPod(t *testing.T, w *agentenv.World, p *netlab.Pod, name string, labels map[string]string, owner metav1.OwnerReference) {
	t.Helper()
	ctx := context.Background()
	zero := int64(0)
	yes := true
	owner.Controller = &yes
	owner.UID = "00000000-0000-0000-0000-0000000000aa"
	pod, err := w.CS.CoreV1().Pods(w.NS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.NS, Labels: labels, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: corev1.PodSpec{NodeName: agentenv.NodeName, TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{Name: "app", Image: "none", ImagePullPolicy: corev1.PullNever}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}}}
	if _, err := w.CS.CoreV1().Pods(w.NS).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// linkStats are a host veth's own counters (netlink), independent of
// kubeshaper's: rx is what the pod sent, tx what it was given.
type linkStats struct{ rxPackets, rxBytes, txPackets, txBytes uint64 }

func vethStats(t *testing.T, w *agentenv.World, p *netlab.Pod) linkStats {
	t.Helper()
	var s linkStats
	err := podnet.Do(w.NodeNetns(), func() error {
		l, err := netlink.LinkByName(p.HostVeth)
		if err != nil {
			return err
		}
		st := l.Attrs().Statistics
		s = linkStats{st.RxPackets, st.RxBytes, st.TxPackets, st.TxBytes}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// udpSink receives datagrams in a pod on addr (port 0: any) and counts them.
type udpSink struct {
	conn *net.UDPConn
	n    atomic.Int64
}

func newUDPSink(t *testing.T, p *netlab.Pod, ip net.IP) *udpSink {
	t.Helper()
	s := &udpSink{}
	err := podnet.Do(p.Netns, func() (err error) {
		s.conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s.conn.SetReadBuffer(8 << 20)
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := s.conn.ReadFrom(buf); err != nil {
				return
			}
			s.n.Add(1)
		}
	}()
	return s
}

func (s *udpSink) addr() *net.UDPAddr { return s.conn.LocalAddr().(*net.UDPAddr) }

// sendUDP sends count datagrams of size bytes from pod p to dst, paced at
// perSec (0: as fast as possible), from one socket: one 5-tuple, whose
// source it returns.
func sendUDP(t *testing.T, p *netlab.Pod, dst *net.UDPAddr, count, size, perSec int) *net.UDPAddr {
	t.Helper()
	src, err := trySendUDP(p, dst, count, size, perSec)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func trySendUDP(p *netlab.Pod, dst *net.UDPAddr, count, size, perSec int) (*net.UDPAddr, error) {
	var conn *net.UDPConn
	err := podnet.Do(p.Netns, func() (err error) {
		conn, err = net.DialUDP("udp", nil, dst)
		return err
	})
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("datagram %d: %w", i, err)
		}
	}
	return conn.LocalAddr().(*net.UDPAddr), nil
}

// sendTCP sends exactly n bytes over one connection from pod from to a
// listener in pod to on ip, closes it and waits until the receiver has
// read everything. It returns the client's and the server's addresses.
func sendTCP(t *testing.T, from, to *netlab.Pod, ip net.IP, n int) (client, server *net.TCPAddr) {
	t.Helper()
	var ln net.Listener
	err := podnet.Do(to.Netns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	var conn net.Conn
	err = podnet.Do(from.Netns, func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
	client = conn.LocalAddr().(*net.TCPAddr)
	conn.Close()
	select {
	case k := <-got:
		if k != int64(n) {
			t.Fatalf("receiver got %d bytes, want %d", k, n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("TCP receiver did not finish")
	}
	return client, ln.Addr().(*net.TCPAddr)
}

// tcpSnmp reads a pod netns's TCP MIB (/proc/net/snmp: IPv4 and IPv6
// share it): OutSegs counts every segment sent, a GSO packet as its
// segments, retransmissions included.
func tcpSnmp(t *testing.T, w *agentenv.World, p *netlab.Pod) map[string]uint64 {
	t.Helper()
	out := w.Lab.In(p.Name, "cat", "/proc/net/snmp")
	var names []string
	m := map[string]uint64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			m[names[i]] = n
		}
	}
	if len(m) == 0 {
		t.Fatalf("no Tcp: lines in /proc/net/snmp of %s", p.Name)
	}
	return m
}

// scrape reads /metrics into "name{k=v,...}" (labels sorted) → value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	m, err := agentenv.Scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tryScrape(addr string) (map[string]float64, error) { return agentenv.Scrape(addr) }

func seriesKey(name string, labels map[string]string) string { return agentenv.SeriesKey(name, labels) }

// podSeries is the label set of a pod's per-direction series.
func podSeries(name, ns, pod, workload, kind, dir string, extra ...string) string {
	l := map[string]string{"namespace": ns, "pod": pod, "workload": workload, "workload_kind": kind, "direction": dir}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, "=")
		l[k] = v
	}
	return seriesKey(name, l)
}

// cliBinary builds cmd/kubeshaper once.
var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

func cliBinary(t testing.TB) string {
	t.Helper()
	cliOnce.Do(func() {
		dir := filepath.Dir(agentenv.Binary(t))
		cliPath = filepath.Join(dir, "kubeshaper")
		if out, err := exec.Command("go", "build", "-o", cliPath, "github.com/kubeshaper/kubeshaper/cmd/kubeshaper").CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("building the CLI: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// runCLI runs `kubeshaper args...` in the node netns, with the bpffs base
// the agent's pins hang under.
func runCLI(t *testing.T, w *agentenv.World, bpffs string, args ...string) string {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + w.NodeNetns(), cliBinary(t)}, args...)...)
	cmd.Env = append(os.Environ(), "KUBESHAPER_BPFFS="+bpffs)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubeshaper %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}
