// Package netlab builds throwaway "nodes" and "pods" out of network
// namespaces and veth pairs for kubeshaper's integration tests: a node
// netns routing between pod netns, each pod's eth0 paired with a host-side
// veth in the node, as a ptp-style CNI would. Everything carries a unique
// prefix and is removed in t.Cleanup, also when the test fails.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Lab is one node netns and its pods.
type Lab struct {
	t      testing.TB
	Prefix string // unique: ks<tag><hex>
	Node   string // node netns name
	subnet int
	pods   []*Pod
}

// Pod is a pod netns with eth0 paired to a host veth in the node netns.
type Pod struct {
	Name     string // netns name
	Netns    string // /var/run/netns/<Name>
	HostVeth string // in the node netns
	IP       net.IP // on eth0
	HostIP   net.IP // the node's end of the /24
}

// New creates a node netns with forwarding on. tag (2-3 letters) names the
// test package in interface names, which are limited to 15 bytes.
func New(t testing.TB, tag string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	b := make([]byte, 3)
	rand.Read(b)
	l := &Lab{t: t, Prefix: "ks" + tag + hex.EncodeToString(b)}
	l.Node = l.Prefix + "-node"
	t.Cleanup(l.destroy)
	l.ip("netns", "add", l.Node)
	l.In(l.Node, "ip", "link", "set", "lo", "up")
	l.In(l.Node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return l
}

// AddPod creates a pod netns routed through the node: 10.<x>.<n>.2/24 on
// eth0, the node's veth holding 10.<x>.<n>.1.
func (l *Lab) AddPod(name string) *Pod {
	l.t.Helper()
	l.subnet++
	p := &Pod{
		Name:     l.Prefix + "-" + name,
		HostVeth: fmt.Sprintf("%sh%d", l.Prefix, l.subnet),
		IP:       net.IPv4(10, 213, byte(l.subnet), 2).To4(),
		HostIP:   net.IPv4(10, 213, byte(l.subnet), 1).To4(),
	}
	p.Netns = "/var/run/netns/" + p.Name
	l.ip("netns", "add", p.Name)
	l.pods = append(l.pods, p)
	l.In(p.Name, "ip", "link", "set", "lo", "up")
	l.ip("link", "add", p.HostVeth, "netns", l.Node, "type", "veth", "peer", "name", "eth0", "netns", p.Name)
	l.In(l.Node, "ip", "addr", "add", p.HostIP.String()+"/24", "dev", p.HostVeth)
	l.In(l.Node, "ip", "link", "set", p.HostVeth, "up")
	l.In(p.Name, "ip", "addr", "add", p.IP.String()+"/24", "dev", "eth0")
	l.In(p.Name, "ip", "link", "set", "eth0", "up")
	l.In(p.Name, "ip", "route", "add", "default", "via", p.HostIP.String())
	return p
}

// In runs a command inside netns name and fails the test on error.
func (l *Lab) In(netns string, args ...string) string {
	l.t.Helper()
	out, err := l.TryIn(netns, args...)
	if err != nil {
		l.t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), netns, err, out)
	}
	return out
}

// TryIn runs a command inside netns name (network namespace only: the
// mount namespace, and so the host's bpffs, stay visible).
func (l *Lab) TryIn(netns string, args ...string) (string, error) {
	cmdArgs := append([]string{"--net=/var/run/netns/" + netns}, args...)
	out, err := exec.Command("nsenter", cmdArgs...).CombinedOutput()
	return string(out), err
}

func (l *Lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// destroy removes the pods and the node; deleting a netns deletes the
// veth ends in it, and with them their peers.
func (l *Lab) destroy() {
	for _, p := range l.pods {
		exec.Command("ip", "netns", "del", p.Name).Run()
	}
	exec.Command("ip", "netns", "del", l.Node).Run()
}
