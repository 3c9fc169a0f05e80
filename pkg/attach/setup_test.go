package attach

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"

	"github.com/kubeshaper/kubeshaper/pkg/podnet"
)

// Every netns these tests create is named ksat-<random>; all interfaces
// they touch live in such a namespace and die with it.
const nsPrefix = "ksat-"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, qdiscs and BPF programs")
	}
	for _, bin := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
}

type testNetns struct {
	name, path string
}

// newNetns creates ksat-<random> and removes it at cleanup, which also
// removes every interface, qdisc and filter inside.
func newNetns(t *testing.T) testNetns {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := nsPrefix + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return testNetns{name: name, path: filepath.Join("/var/run/netns", name)}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs a command (ip, tc) inside the namespace.
func (n testNetns) in(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// do runs fn on a thread inside the namespace, where the attach API acts.
func (n testNetns) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := podnet.Do(n.path, fn); err != nil {
		t.Fatal(err)
	}
}

// veth creates an up veth pair inside the namespace and returns the
// ifindex of each end.
func (n testNetns) veth(t *testing.T, a, b string) (int, int) {
	t.Helper()
	n.in(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	n.in(t, "ip", "link", "set", a, "up")
	n.in(t, "ip", "link", "set", b, "up")
	var ia, ib int
	n.do(t, func() error {
		la, err := netlink.LinkByName(a)
		if err != nil {
			return err
		}
		lb, err := netlink.LinkByName(b)
		if err != nil {
			return err
		}
		ia, ib = la.Attrs().Index, lb.Attrs().Index
		return nil
	})
	return ia, ib
}

// filterLines returns the lines of `tc filter show dev X hook` that
// describe a filter (with a handle), not the per-priority headers.
func (n testNetns) filterLines(t *testing.T, dev string, hook Hook) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(n.in(t, "tc", "filter", "show", "dev", dev, hook.String()), "\n") {
		if strings.Contains(l, " handle ") || strings.Contains(l, " fh ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

func (n testNetns) hasClsact(t *testing.T, dev string) bool {
	t.Helper()
	return strings.Contains(n.in(t, "tc", "qdisc", "show", "dev", dev), "qdisc clsact")
}

// trivialProg is the smallest TC program: return TC_ACT_UNSPEC (-1), so
// later filters still run.
func trivialProg(t *testing.T, name string) (*ebpf.Program, uint32) {
	t.Helper()
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    name,
		Type:    ebpf.SchedCLS,
		License: "Apache-2.0",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	t.Cleanup(func() { prog.Close() })
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel reports no program ID")
	}
	return prog, uint32(id)
}

func ours(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, "handle 0x4b53 ") {
			out = append(out, l)
		}
	}
	return out
}
