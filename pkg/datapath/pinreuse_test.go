package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// tempBPFFS is a fresh directory on the bpffs standing in for its mount.
func tempBPFFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	base := DefaultBPFFS + "/kstest-ksdp-" + hex.EncodeToString(b)
	if err := os.MkdirAll(base, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	return base
}

// inNewNetns locks the goroutine's thread into a new netns until cleanup;
// it returns the netns handle and its inode.
func inNewNetns(t *testing.T) (netns.NsHandle, uint64) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
	})
	return ns, st.Ino
}

// countSome runs n packets through ifindex's egress program.
func countSome(t *testing.T, dp *Datapath, ifindex, n int) {
	t.Helper()
	if _, err := dp.Program(rules.Egress).Run(&ebpf.RunOptions{Data: udpPacket(64), Context: skbCtx{Ifindex: uint32(ifindex)}, Repeat: uint32(n)}); err != nil {
		t.Fatal(err)
	}
}

func lossRule(t *testing.T, pct float64) Config {
	t.Helper()
	c, err := ConfigFor(rules.DirectionPolicy{Loss: &rules.Loss{Kind: rules.LossUniform, Percent: pct}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A netns deleted without `iface clear` and a new one that gets its inode
// (nsfs hands out the lowest free one): the new netns must see none of
// the old one's rule and counters, and the old pin directory is removed.
func TestNetnsInodeReuse(t *testing.T) {
	base := tempBPFFS(t)
	t.Setenv(PinDirEnv, base)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)

	old, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(int(old), &st)
	oldIno := st.Ino
	if netnsCookieForTest() == 0 {
		netns.Set(orig)
		old.Close()
		t.Skip("kernel before 5.14: no SO_NETNS_COOKIE, pin directories are named by inode alone (documented limit)")
	}
	oldDir, err := DefaultPinDir()
	if err != nil {
		t.Fatal(err)
	}
	dp, err := Open(oldDir)
	if err != nil {
		t.Fatal(err)
	}
	key := KeyOf(loIfindex, rules.Egress)
	if err := dp.Set(key, lossRule(t, 50)); err != nil {
		t.Fatal(err)
	}
	countSome(t, dp, loIfindex, 1000)
	if c, _, _ := dp.Counters(key); c.Packets != 1000 {
		t.Fatalf("old netns counted %d packets, want 1000", c.Packets)
	}
	dp.Close()
	// Gone without a clear: the thread leaves, the last handle closes.
	netns.Set(orig)
	old.Close()

	// The kernel frees the inode when the netns is torn down (a
	// workqueue, soon after). Netns that get another inode are held until
	// the end, so that each try can only get a lower free one.
	var held []netns.NsHandle
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	allHigher := true
	for {
		ns, err := netns.New()
		if err != nil {
			t.Fatal(err)
		}
		unix.Fstat(int(ns), &st)
		if st.Ino == oldIno {
			defer ns.Close()
			break
		}
		allHigher = allHigher && st.Ino > oldIno
		netns.Set(orig)
		held = append(held, ns)
		// Kernels from 7.x on give every netns a new inode (no reuse,
		// so nothing to inherit): after 200 new ones, all above the
		// old inode, the premise does not hold here.
		if len(held) >= 200 && allHigher {
			t.Skipf("this kernel does not reuse netns inodes: %d new netns all got inodes above %d", len(held), oldIno)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new netns got inode %d within 30 s (others got %d of them)", oldIno, len(held))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("a new netns reuses inode %d after %d tries", oldIno, len(held)+1)

	newDir, err := DefaultPinDir()
	if err != nil {
		t.Fatal(err)
	}
	dp2, err := Open(newDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	if c, ok, err := dp2.Lookup(key); err != nil || ok {
		t.Errorf("the new netns finds the old one's rule (flags %#x, err %v)", c.flags, err)
	}
	if c, ok, err := dp2.Counters(key); err != nil || (ok && c.Packets != 0) {
		t.Errorf("the new netns starts with the old one's counters: %d packets (err %v)", c.Packets, err)
	}
	if newDir != oldDir {
		if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
			t.Errorf("the old netns's pin directory %s is still there (stat: %v)", oldDir, err)
		}
	}
}

func netnsCookieForTest() uint64 {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, 71)
	if err != nil {
		return 0
	}
	return v
}

// A veth deleted without a clear and a new one created with its index:
// counters start at zero, and the old rule does not linger.
func TestIfindexReuse(t *testing.T) {
	base := tempBPFFS(t)
	inNewNetns(t)
	const idx = 4242
	mk := func(name string) {
		t.Helper()
		la := netlink.NewLinkAttrs()
		la.Name, la.Index = name, idx
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
	}
	mk("ksdp-old")
	dp, err := Open(base + "/pins")
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	eg, in := KeyOf(idx, rules.Egress), KeyOf(idx, rules.Ingress)
	if err := dp.Set(eg, lossRule(t, 50)); err != nil {
		t.Fatal(err)
	}
	if err := dp.Set(in, lossRule(t, 50)); err != nil {
		t.Fatal(err)
	}
	countSome(t, dp, idx, 1000)
	l, _ := netlink.LinkByName("ksdp-old")
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}

	mk("ksdp-new")
	// The new interface gets an egress rule only.
	if err := dp.Set(eg, lossRule(t, 1)); err != nil {
		t.Fatal(err)
	}
	if c, _, err := dp.Counters(eg); err != nil || c.Packets != 0 {
		t.Errorf("a new interface with a reused index starts with %d packets counted (err %v), want 0", c.Packets, err)
	}
	if _, ok, _ := dp.Lookup(in); ok {
		t.Errorf("the old interface's ingress rule is still there for the new one")
	}
	// The same interface again keeps its counters.
	countSome(t, dp, idx, 10)
	if err := dp.Set(eg, lossRule(t, 2)); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := dp.Counters(eg); c.Packets != 10 {
		t.Errorf("re-applying to the same interface: %d packets counted, want 10 (kept)", c.Packets)
	}
}

// A node whose pod capacity grew: the agent opens the pins with larger
// sizes; every rule and counter is carried over, and the log says so.
func TestResizeMigratesEntries(t *testing.T) {
	base := tempBPFFS(t)
	dir := base + "/pins"
	var logged []string
	logf := func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	dp, err := OpenWith(dir, Options{Entries: 64, FlowEntries: 128, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	key := KeyOf(loIfindex, rules.Egress)
	if err := dp.Set(key, lossRule(t, 1)); err != nil {
		t.Fatal(err)
	}
	countSome(t, dp, loIfindex, 100)
	dp.Close()

	dp, err = OpenWith(dir, Options{Entries: 256, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if got := dp.objs.KsRules.MaxEntries(); got != 256 {
		t.Errorf("rules map has %d entries after growing, want 256", got)
	}
	if got := flowEntriesOf(dp.objs.KsFlows); got != 128 {
		t.Errorf("flows map has %d entries, want the pinned 128 kept", got)
	}
	if c, ok, err := dp.Lookup(key); err != nil || !ok || c.LossThresh == 0 {
		t.Errorf("rule lost in the migration: ok %v err %v", ok, err)
	}
	if c, _, _ := dp.Counters(key); c.Packets != 100 {
		t.Errorf("counters after the migration: %d packets, want 100", c.Packets)
	}
	if !strings.Contains(strings.Join(logged, "\n"), "resized from 64 to 256 entries") {
		t.Errorf("no log line for the migration: %q", logged)
	}
	// A smaller size never shrinks the pins.
	dp.Close()
	dp, err = OpenWith(dir, Options{Entries: 64, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	if got := dp.objs.KsRules.MaxEntries(); got != 256 {
		t.Errorf("asking for 64 entries shrank the rules map to %d", got)
	}
	if c, _, _ := dp.Counters(key); c.Packets != 100 {
		t.Errorf("counters after asking for less: %d packets, want 100", c.Packets)
	}
	// The CLI, with no size given, keeps what is pinned.
	dp2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	if got := dp2.objs.KsStats.MaxEntries(); got != 256 {
		t.Errorf("a run without sizes resized the pins to %d", got)
	}
}
