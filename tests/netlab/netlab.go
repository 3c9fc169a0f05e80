// Package netlab builds throwaway "nodes" and "pods" out of network
// namespaces and veth pairs for kubeshaper's integration tests: a node
// netns routing between pod netns, each pod's eth0 paired with a host-side
// veth in the node, as a ptp-style CNI would. Everything carries a unique
// prefix and is removed in t.Cleanup, also when the test fails.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// Lab is one node netns and its pods.
type Lab struct {
	t      testing.TB // nil for a lab made with Create
	Prefix string     // unique: ks<tag><hex>, or Create's
	Node   string     // node netns name

	mu     sync.Mutex
	subnet int
	pods   map[string]*Pod // by netns name
}

// Pod is a pod netns with eth0 paired to a host veth in the node netns.
type Pod struct {
	Name     string // netns name
	Netns    string // /var/run/netns/<Name>
	HostVeth string // in the node netns
	IP       net.IP // on eth0
	HostIP   net.IP // the node's end of the pod's subnet
	spec     PodSpec
}

// New creates a node netns with forwarding on, removed with its pods in
// t.Cleanup. tag (2-3 letters) names the test package in interface names,
// which are limited to 15 bytes.
func New(t testing.TB, tag string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	b := make([]byte, 3)
	rand.Read(b)
	l, err := Create("ks" + tag + hex.EncodeToString(b))
	if l != nil {
		l.t = t
		t.Cleanup(func() { l.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Create is New for programs (tools/bench): a node netns <prefix>-node
// with forwarding on. The caller removes it, and every pod
// made in it, with Close, also after an error (a lab is returned with
// it whenever anything was created).
func Create(prefix string) (*Lab, error) {
	l := &Lab{Prefix: prefix, Node: prefix + "-node", pods: map[string]*Pod{}}
	h, err := newNamedNetns(l.Node)
	if err != nil {
		return nil, err
	}
	h.Close()
	if err := podnet.Do(l.NodeNetns(), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		return l, fmt.Errorf("lo up in %s: %w", l.Node, err)
	}
	return l, Sysctl(l.NodeNetns(), "net/ipv4/ip_forward", "1")
}

// NodeNetns is the node netns's path.
func (l *Lab) NodeNetns() string { return "/var/run/netns/" + l.Node }

// AddPod creates a pod netns routed through the node (NewPod with the
// defaults: 10.213.<n>.2/24 on eth0, the node's veth holding .1), failing
// the test on error.
func (l *Lab) AddPod(name string) *Pod {
	l.t.Helper()
	p, err := l.NewPod(name, PodSpec{})
	if err != nil {
		l.t.Fatal(err)
	}
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

// Close removes the pods (RemovePods) and the node.
func (l *Lab) Close() error {
	return errors.Join(l.RemovePods(), removeNamedNetns(l.NodeNetns()))
}

// RemovePods removes every pod (deleting a netns deletes the veth end in
// it, and with it its peer), and every netns carrying the lab's prefix
// that a failed test or run lost track of; the node stays.
func (l *Lab) RemovePods() error {
	l.mu.Lock()
	pods := make([]*Pod, 0, len(l.pods))
	for _, p := range l.pods {
		pods = append(pods, p)
	}
	l.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, l.RemovePod(p))
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.Prefix+"-") && e.Name() != l.Node {
			errs = append(errs, removeNamedNetns(filepath.Join("/var/run/netns", e.Name())))
		}
	}
	return errors.Join(errs...)
}
