package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A network namespace's identity for naming its pin directory. The inode
// alone is not one: nsfs inodes are handed out lowest-free, so a netns
// created after another was deleted gets its number (measured: every time
// on an idle machine) and would inherit its maps, rules and counters. The
// netns cookie (SO_NETNS_COOKIE, Linux 5.14) is a 64-bit counter that is
// never reused while the machine runs, so <inode>-<cookie> names one netns
// for good. Kernels before 5.14 have no cookie: there the name is the inode
// alone, and only the pruning below (a dead netns's directory is removed
// on the next start) protects it.
type netnsID struct {
	ino    uint64
	cookie uint64 // 0: unknown (kernel before 5.14)
}

func (id netnsID) dirName() string {
	if id.cookie == 0 {
		return fmt.Sprintf("netns-%d", id.ino)
	}
	return fmt.Sprintf("netns-%d-%d", id.ino, id.cookie)
}

// parseNetnsDir reads a directory name written by dirName.
func parseNetnsDir(name string) (netnsID, bool) {
	rest, ok := strings.CutPrefix(name, "netns-")
	if !ok {
		return netnsID{}, false
	}
	inoS, cookieS, hasCookie := strings.Cut(rest, "-")
	ino, err := strconv.ParseUint(inoS, 10, 64)
	if err != nil {
		return netnsID{}, false
	}
	id := netnsID{ino: ino}
	if hasCookie {
		if id.cookie, err = strconv.ParseUint(cookieS, 10, 64); err != nil {
			return netnsID{}, false
		}
	}
	return id, true
}

// ownNetnsID identifies the calling thread's network namespace.
func ownNetnsID() (netnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return netnsID{}, fmt.Errorf("reading own network namespace: %w", err)
	}
	return netnsID{ino: st.Ino, cookie: netnsCookie()}, nil
}

// netnsCookie is the calling thread's netns cookie, 0 when the kernel has
// no SO_NETNS_COOKIE.
func netnsCookie() uint64 {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	// SO_NETNS_COOKIE = 71 (asm-generic/socket.h), a u64.
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, 71)
	if err != nil {
		return 0
	}
	return v
}

// netnsIDOf identifies the netns behind a handle (a /proc/…/ns/net file or
// a bind mount of one) by entering it on a locked thread.
func netnsIDOf(path string) (netnsID, error) {
	ns, err := os.Open(path)
	if err != nil {
		return netnsID{}, err
	}
	defer ns.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &st); err != nil {
		return netnsID{}, err
	}
	id := netnsID{ino: st.Ino}
	if netnsCookie() == 0 {
		return id, nil // no cookies on this kernel: nothing to enter for
	}
	runtime.LockOSThread()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return id, err
	}
	defer own.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return id, fmt.Errorf("entering netns %s: %w", path, err)
	}
	id.cookie = netnsCookie()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with its goroutine: never
		// hand a thread in the wrong netns back to the scheduler.
		return id, fmt.Errorf("returning from netns %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return id, nil
}

// netnsHandles finds a handle to every network namespace this process can
// see: each task's namespace, each open netns file descriptor, and each
// nsfs bind mount (ip netns, a CNI's). inode → one path to it.
func netnsHandles() map[uint64]string {
	out := map[uint64]string{}
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil {
			if _, ok := out[st.Ino]; !ok {
				out[st.Ino] = path
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		base := "/proc/" + p.Name()
		tasks, _ := os.ReadDir(base + "/task")
		for _, t := range tasks {
			add(base + "/task/" + t.Name() + "/ns/net")
		}
		fds, _ := os.ReadDir(base + "/fd")
		for _, f := range fds {
			link, err := os.Readlink(base + "/fd/" + f.Name())
			if err == nil && strings.HasPrefix(link, "net:[") {
				add(base + "/fd/" + f.Name())
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			// … mount-point … - fstype source …
			pre, post, ok := strings.Cut(line, " - ")
			if !ok || !strings.HasPrefix(post, "nsfs ") {
				continue
			}
			if f := strings.Fields(pre); len(f) > 4 {
				add(unescapeMount(f[4]))
			}
		}
	}
	return out
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// inInitPidns reports whether this process sees every process of the
// machine (PROC_PID_INIT_INO): only then does "no process, fd or mount
// holds this netns" mean that it is gone.
func inInitPidns() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/self/ns/pid", &st) == nil && st.Ino == 0xEFFFFFFC
}

// PruneStalePinDirs removes the pin directories (netns-*) under the
// kubeshaper directory that belong to network namespaces that no longer
// exist, or to an earlier netns whose inode a live one now has. pinDir is
// either that kubeshaper directory or one of its netns-* subdirectories.
// It returns what it removed. A directory whose netns may still exist is
// kept: without a view of every process (another PID namespace) only
// directories contradicted by a live netns's cookie are removed.
func PruneStalePinDirs(pinDir string) ([]string, error) {
	root := pinDir
	if _, ok := parseNetnsDir(filepath.Base(pinDir)); ok {
		root = filepath.Dir(pinDir)
	}
	entries, err := os.ReadDir(root)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing pin directories in %s: %w", root, err)
	}
	var dirs []netnsID
	var names []string
	for _, e := range entries {
		if id, ok := parseNetnsDir(e.Name()); ok && e.IsDir() {
			dirs, names = append(dirs, id), append(names, e.Name())
		}
	}
	if len(dirs) == 0 {
		return nil, nil // the common case on a node: no scan at all
	}
	handles := netnsHandles()
	seeAll := inInitPidns()
	live := map[uint64]netnsID{}
	var removed []string
	var errs []string
	self := filepath.Clean(pinDir)
	for i, id := range dirs {
		if filepath.Join(root, names[i]) == self {
			continue // the directory being opened is never stale
		}
		stale := false
		path, exists := handles[id.ino]
		switch {
		case !exists:
			stale = seeAll
		default:
			cur, ok := live[id.ino]
			if !ok {
				var err error
				if cur, err = netnsIDOf(path); err != nil {
					continue // gone meanwhile, or not ours to enter: keep
				}
				live[id.ino] = cur
			}
			// A live netns with this inode but another cookie: the
			// directory's netns is gone. A directory without a cookie
			// (kernel before 5.14, or written by an earlier kubeshaper)
			// while the kernel has cookies is an earlier netns's too.
			stale = cur.cookie != 0 && cur.cookie != id.cookie
		}
		if !stale {
			continue
		}
		dir := filepath.Join(root, names[i])
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		removed = append(removed, dir)
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("removing stale pin directories: %s", strings.Join(errs, "; "))
	}
	return removed, nil
}
