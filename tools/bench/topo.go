package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
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

	created       []string // netns names we created, to delete
	nsfd          map[string]netns.NsHandle
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

// setup builds the topology. b.topo is set first so that cleanup removes
// whatever part was built when a step fails.
func (b *bench) setup() error {
	id := randomID()
	t := &topo{
		ID: id, Node: "ksb-" + id + "-node", A: "ksb-" + id + "-a", B: "ksb-" + id + "-b",
		VethA: "ksb-" + id + "a", VethB: "ksb-" + id + "b",
		nsfd: map[string]netns.NsHandle{},
	}
	b.topo = t
	logf("topology %s: netns %s, %s, %s; host veths %s, %s", id, t.Node, t.A, t.B, t.VethA, t.VethB)
	for _, ns := range []string{t.Node, t.A, t.B} {
		if _, err := runCmd(10*time.Second, "ip", "netns", "add", ns); err != nil {
			return err
		}
		t.created = append(t.created, ns)
		h, err := netns.GetFromName(ns)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", ns, err)
		}
		t.nsfd[ns] = h
	}
	var err error
	if t.hNode, err = netlink.NewHandleAt(t.nsfd[t.Node]); err != nil {
		return err
	}
	if t.hA, err = netlink.NewHandleAt(t.nsfd[t.A]); err != nil {
		return err
	}
	if t.hB, err = netlink.NewHandleAt(t.nsfd[t.B]); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", t.Node, "link", "add", t.VethA, "mtu", "1500", "type", "veth", "peer", "name", "eth0", "mtu", "1500", "netns", t.A},
		{"ip", "-n", t.Node, "link", "add", t.VethB, "mtu", "1500", "type", "veth", "peer", "name", "eth0", "mtu", "1500", "netns", t.B},
	}
	for _, ns := range []string{t.Node, t.A, t.B} {
		steps = append(steps,
			[]string{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", t.Node, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		[]string{"ip", "netns", "exec", t.A, "sysctl", "-qw", "net.ipv4.tcp_timestamps=1"},
		[]string{"ip", "netns", "exec", t.B, "sysctl", "-qw", "net.ipv4.tcp_timestamps=1"},
		[]string{"ip", "-n", t.Node, "addr", "add", gwA + "/24", "dev", t.VethA},
		[]string{"ip", "-n", t.Node, "addr", "add", gwB + "/24", "dev", t.VethB},
		[]string{"ip", "-n", t.Node, "link", "set", t.VethA, "up"},
		[]string{"ip", "-n", t.Node, "link", "set", t.VethB, "up"},
		[]string{"ip", "-n", t.A, "addr", "add", ipA + "/24", "dev", "eth0"},
		[]string{"ip", "-n", t.B, "addr", "add", ipB + "/24", "dev", "eth0"},
		[]string{"ip", "-n", t.A, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", t.B, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", t.A, "route", "add", "default", "via", gwA},
		[]string{"ip", "-n", t.B, "route", "add", "default", "via", gwB},
	)
	for _, s := range steps {
		if _, err := runCmd(10*time.Second, s[0], s[1:]...); err != nil {
			return err
		}
	}
	// Permanent neighbours: no ARP on the measured path, and a rule that
	// drops everything (exponential t=0) cannot break the next point.
	mac := func(h *netlink.Handle, name string) (string, error) {
		l, err := h.LinkByName(name)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return l.Attrs().HardwareAddr.String(), nil
	}
	macVA, err := mac(t.hNode, t.VethA)
	if err != nil {
		return err
	}
	macVB, err := mac(t.hNode, t.VethB)
	if err != nil {
		return err
	}
	macA, err := mac(t.hA, "eth0")
	if err != nil {
		return err
	}
	macB, err := mac(t.hB, "eth0")
	if err != nil {
		return err
	}
	for _, s := range [][]string{
		{"ip", "-n", t.A, "neigh", "replace", gwA, "lladdr", macVA, "dev", "eth0", "nud", "permanent"},
		{"ip", "-n", t.B, "neigh", "replace", gwB, "lladdr", macVB, "dev", "eth0", "nud", "permanent"},
		{"ip", "-n", t.Node, "neigh", "replace", ipA, "lladdr", macA, "dev", t.VethA, "nud", "permanent"},
		{"ip", "-n", t.Node, "neigh", "replace", ipB, "lladdr", macB, "dev", t.VethB, "nud", "permanent"},
	} {
		if _, err := runCmd(10*time.Second, s[0], s[1:]...); err != nil {
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
		for _, fd := range t.nsfd {
			_ = fd.Close()
		}
		// The CLI pinned its maps for the node netns in a directory named
		// after the netns inode (pkg/datapath.DefaultPinDir): remove it with
		// the netns, or every run leaves a set of pins behind.
		if pins := nodePinDir(t.Node); pins != "" {
			if err := os.RemoveAll(pins); err != nil {
				logf("cleanup: removing %s: %v", pins, err)
			}
		}
		for i := len(t.created) - 1; i >= 0; i-- {
			if err := cleanupCmd(15*time.Second, "ip", "netns", "del", t.created[i]); err != nil {
				logf("cleanup: ip netns del %s: %v", t.created[i], err)
			}
		}
		logf("cleanup: removed netns %s", strings.Join(t.created, ", "))
	})
}

// cleanupCmd runs one cleanup command (after killAll closed the registry),
// killing it by PID if it outlives its timeout.
func cleanupCmd(timeout time.Duration, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	timer := time.AfterFunc(timeout, func() { killGroup(cmd) })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		return fmt.Errorf("%v: %s", err, firstLine(buf.String()))
	}
	return nil
}

// runCmd runs a command to completion and returns its combined output; the
// error quotes the command and its output. The child is tracked like every
// other (ended by PID on exit), and killed when the timeout passes.
func runCmd(timeout time.Duration, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := children.start(cmd); err != nil {
		return "", fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	timer := time.AfterFunc(timeout, func() { killGroup(cmd) })
	err := cmd.Wait()
	timer.Stop()
	children.done(cmd)
	out := buf.String()
	if err != nil {
		msg := strings.TrimSpace(out)
		if len(msg) > 400 {
			msg = msg[:400] + "…"
		}
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// children are all the processes this program starts.
var children = newProcs()

// procs tracks the long-running processes we start, so that they are ended
// by PID on exit.
type procs struct {
	mu     sync.Mutex
	live   map[*exec.Cmd]bool
	closed bool // cleanup has begun: no new processes
}

func newProcs() *procs { return &procs{live: map[*exec.Cmd]bool{}} }

func (p *procs) start(cmd *exec.Cmd) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("shutting down")
	}
	// Its own process group: ending it ends what it started too (a
	// script's children), and nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.live[cmd] = true
	return nil
}

func (p *procs) done(cmd *exec.Cmd) {
	p.mu.Lock()
	delete(p.live, cmd)
	p.mu.Unlock()
}

func (p *procs) running(cmd *exec.Cmd) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[cmd]
}

// killAll stops new starts, sends SIGTERM to each process we started, then
// SIGKILL to those still alive a second later.
func (p *procs) killAll() {
	p.mu.Lock()
	p.closed = true
	var pids []int
	for c := range p.live {
		if c.Process != nil {
			pids = append(pids, c.Process.Pid)
		}
	}
	p.mu.Unlock()
	for _, pid := range pids {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil && !zombie(pid) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the group: leader and what it started
	}
}

// killGroup ends a child we started and its own children (its process
// group, created at start).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

// nodePinDir is where a CLI run inside the named netns pinned its maps.
func nodePinDir(name string) string {
	dir, err := datapath.PinDirOfNetns(datapath.DefaultBPFFS, "/var/run/netns/"+name)
	if err != nil {
		return ""
	}
	return dir
}
