package podnet

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every netns these tests create is named kspn-<random>-<role>, so parallel
// runs (and other people's namespaces on the machine) never collide, and a
// leftover is easy to recognise.
const nsPrefix = "kspn-"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs")
	}
	for _, bin := range []string{"ip", "nsenter", "unshare", "sleep"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testNetns is a network namespace made by a test. ref is what `ip link
// ... netns REF` accepts: the name of a bind-mounted netns or a PID.
type testNetns struct {
	path string
	ref  string
}

// ip runs the ip command inside the namespace.
func (n testNetns) ip(t *testing.T, args ...string) {
	t.Helper()
	run(t, append([]string{"nsenter", "--net=" + n.path, "ip"}, args...)...)
}

// boundNetns creates a netns held by a bind mount under /var/run/netns.
func boundNetns(t *testing.T, name string) testNetns {
	t.Helper()
	if !strings.HasPrefix(name, nsPrefix) {
		t.Fatalf("test netns %q must start with %s", name, nsPrefix)
	}
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	n := testNetns{path: filepath.Join("/var/run/netns", name), ref: name}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// processNetns creates a netns held only by a process (no bind mount):
// `unshare --net sleep 60`, killed by its PID at cleanup, which destroys
// the netns and every interface in it.
func processNetns(t *testing.T) testNetns {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare --net sleep 60: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	// unshare switches netns just before exec'ing sleep: wait for it.
	own := inode(t, "/proc/self/ns/net")
	for deadline := time.Now().Add(5 * time.Second); inode(t, path) == own; {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never left our netns", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n := testNetns{path: path, ref: strconv.Itoa(pid)}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}
