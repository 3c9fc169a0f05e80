package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
	"github.com/kubeshaper/kubeshaper/tests/netlab"
)

// Topology (routed, one /24 per veth, static neighbours):
//
//	pod A netns "ksb-<id>-a"        node netns "ksb-<id>-node"           pod B netns "ksb-<id>-b"
//	eth0 10.77.1.2/24  <--veth-->  ksb-<id>a 10.77.1.1/24
//	default via 10.77.1.1                 ip_forward=1
//	                                      ksb-<id>b 10.77.2.1/24  <--veth-->  eth0 10.77.2.2/24
//	                                                                          default via 10.77.2.1
const (
	ipA, gwA  = "10.77.1.2", "10.77.1.1"
	ipB, gwB  = "10.77.2.2", "10.77.2.1"
	iperfPort = 5201
	udpPort   = 9911
)

type topo struct {
	ID    string `json:"id"`
	Node  string `json:"node_netns"`
	A     string `json:"pod_a_netns"`
	B     string `json:"pod_b_netns"`
	VethA string `json:"host_veth_a"`
	VethB string `json:"host_veth_b"`

	lab           *netlab.Lab // the namespaces and veths (tests/netlab)
	hNode, hA, hB *netlink.Handle
}

func (t *topo) describe() map[string]string {
	return map[string]string{
		"id": t.ID, "node_netns": t.Node, "pod_a_netns": t.A, "pod_b_netns": t.B,
		"host_veth_a": t.VethA, "host_veth_b": t.VethB,
		"pod_a": ipA + "/24 via " + gwA, "pod_b": ipB + "/24 via " + gwB,
		"routing": "routed through the node netns (ip_forward=1), one /24 per veth, permanent neighbour entries, IPv6 disabled, MTU 1500",
	}
}

// bench holds the run's state.
type bench struct {
	cfg     config
	topo    *topo
	procs   *procs
	report  *report
	written []string

	cliErr  string // why the kubeshaper CLI cannot be used, "" if it can
	cliUsed bool
	iperfS  *exec.Cmd

	cleanOnce sync.Once
	stopping  atomic.Bool     // a signal arrived
	tables    strings.Builder // the tables printed, for datapath.txt
}

func randomID() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return fmt.Sprintf("%06x", time.Now().UnixNano()&0xffffff)
	}
	return hex.EncodeToString(b)
}

// setup builds the topology on tests/netlab (the one lab of the tests
// and benchmarks). b.topo is set first so that cleanup removes whatever
// part was built when a step fails.
func (b *bench) setup() error {
	id := randomID()
	t := &topo{ID: id, VethA: "ksb-" + id + "a", VethB: "ksb-" + id + "b"}
	b.topo = t
	lab, err := netlab.Create("ksb-" + id)
	t.lab = lab
	if err != nil {
		return err
	}
	t.Node = lab.Node
	if err := netlab.DisableIPv6(lab.NodeNetns()); err != nil {
		return err
	}
	// Permanent neighbours: no ARP on the measured path, and a rule that
	// drops everything (exponential t=0) cannot break the next point.
	pod := func(name, veth, ip, gw string) (*netlab.Pod, error) {
		p, err := lab.NewPod(name, netlab.PodSpec{
			HostVeth: veth, IP: net.ParseIP(ip).To4(), HostIP: net.ParseIP(gw).To4(), PrefixLen: 24,
			MTU: 1500, StaticNeighbours: true, NoIPv6: true,
		})
		if err != nil {
			return nil, err
		}
		return p, netlab.Sysctl(p.Netns, "net/ipv4/tcp_timestamps", "1")
	}
	pa, err := pod("a", t.VethA, ipA, gwA)
	if err != nil {
		return err
	}
	pb, err := pod("b", t.VethB, ipB, gwB)
	if err != nil {
		return err
	}
	t.A, t.B = pa.Name, pb.Name
	logf("topology %s: netns %s, %s, %s; host veths %s, %s", id, t.Node, t.A, t.B, t.VethA, t.VethB)
	for _, h := range []struct {
		path string
		to   **netlink.Handle
	}{{lab.NodeNetns(), &t.hNode}, {pa.Netns, &t.hA}, {pb.Netns, &t.hB}} {
		ns, err := netns.GetFromPath(h.path)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", h.path, err)
		}
		*h.to, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
		if err != nil {
			return err
		}
	}
	if err := b.waitPing(); err != nil {
		return err
	}
	return b.startIperfServer()
}

// waitPing checks that pod A reaches pod B through the node.
func (b *bench) waitPing() error {
	var err error
	for i := 0; i < 10; i++ {
		if _, err = runCmd(5*time.Second, "ip", "netns", "exec", b.topo.A, "ping", "-n", "-q", "-c", "1", "-W", "1", ipB); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("pod A cannot reach pod B: %w", err)
}

func (b *bench) startIperfServer() error {
	cmd := exec.Command("ip", "netns", "exec", b.topo.B, "iperf3", "-s", "-B", ipB, "-p", fmt.Sprint(iperfPort))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := b.procs.start(cmd); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	b.iperfS = cmd
	go func() { _ = cmd.Wait(); b.procs.done(cmd) }()
	// Wait until it listens (without connecting: that would start a test).
	for i := 0; i < 50; i++ {
		out, _ := runCmd(5*time.Second, "ip", "netns", "exec", b.topo.B, "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort))
		if strings.Contains(out, fmt.Sprint(iperfPort)) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("iperf3 server in %s does not listen", b.topo.B)
}

// iperfServerAlive restarts the server if it died.
func (b *bench) ensureIperfServer() error {
	if b.iperfS != nil && b.procs.running(b.iperfS) {
		return nil
	}
	logf("iperf3 server not running: restarting it")
	return b.startIperfServer()
}

// cleanup ends our processes (by PID), clears kubeshaper's rules on our
// veths, and deletes our namespaces (which removes our veths). Idempotent.
func (b *bench) cleanup() {
	b.cleanOnce.Do(func() {
		b.procs.killAll()
		t := b.topo
		if t == nil {
			return
		}
		if b.cliUsed && b.cliErr == "" {
			for _, v := range []string{t.VethA, t.VethB} {
				if err := cleanupCmd(15*time.Second, "ip", "netns", "exec", t.Node, b.cfg.CLI, "iface", "clear", v); err != nil {
					logf("cleanup: kubeshaper iface clear %s: %v", v, err)
				}
			}
		}
		for _, h := range []*netlink.Handle{t.hNode, t.hA, t.hB} {
			if h != nil {
				h.Close()
			}
		}
		if t.lab == nil {
			return
		}
		// The CLI pinned its maps for the node netns in a directory named
		// after the netns inode (pkg/datapath.DefaultPinDir): remove it with
		// the netns, or every run leaves a set of pins behind.
		if pins := nodePinDir(t.lab.Node); pins != "" {
			if err := os.RemoveAll(pins); err != nil {
				logf("cleanup: removing %s: %v", pins, err)
			}
		}
		if err := t.lab.Close(); err != nil {
			logf("cleanup: removing the netns of %s: %v", t.lab.Prefix, err)
		}
		logf("cleanup: removed netns %s-*", t.lab.Prefix)
	})
}

// nodePinDir is where a CLI run inside the named netns pinned its maps.
func nodePinDir(name string) string {
	dir, err := datapath.PinDirOfNetns(datapath.DefaultBPFFS, "/var/run/netns/"+name)
	if err != nil {
		return ""
	}
	return dir
}
