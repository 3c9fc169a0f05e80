package sockpace

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// PrivateCgroup2 is where Cgroup2 mounts a cgroup v2 hierarchy when the
// node has none mounted (a pure cgroup v1 node).
const PrivateCgroup2 = "/run/kubeshaper/cgroup2"

// Cgroup2Env names the cgroup v2 root to attach at (or a directory whose
// unified/ subdirectory is one), overriding the search.
const Cgroup2Env = "KUBESHAPER_CGROUP2"

// Cgroup2 returns the root of the node's cgroup v2 hierarchy: $KUBESHAPER_
// CGROUP2; else, from a container (another mount or cgroup namespace than
// PID 1's: the DaemonSet runs with hostPID), the node's own mount seen
// through /proc/1/root — the container's /sys/fs/cgroup would be its own
// cgroup, not the node's root, and the agent's filesystem is read-only;
// else where this process sees it mounted (/sys/fs/cgroup on unified
// nodes, /sys/fs/cgroup/unified on hybrids). With none mounted it mounts
// one at PrivateCgroup2: there is one v2 hierarchy per kernel, every
// process is in it even when no one mounted it, so a program attached at
// its root sees every socket.
func Cgroup2() (string, error) {
	if p := os.Getenv(Cgroup2Env); p != "" {
		for _, c := range []string{p, filepath.Join(p, "unified")} {
			if isCgroup2(c) {
				return c, nil
			}
		}
		return "", fmt.Errorf("$%s=%s: neither it nor its unified/ is a cgroup v2 mount", Cgroup2Env, p)
	}
	if !sameNamespace("mnt") || !sameNamespace("cgroup") {
		for _, c := range []string{"/proc/1/root/sys/fs/cgroup", "/proc/1/root/sys/fs/cgroup/unified"} {
			if isCgroup2(c) {
				return c, nil
			}
		}
	}
	if p, err := findCgroup2(); err != nil || p != "" {
		return p, err
	}
	if err := os.MkdirAll(PrivateCgroup2, 0o755); err != nil {
		return "", fmt.Errorf("no cgroup v2 mounted, creating %s: %w", PrivateCgroup2, err)
	}
	if err := unix.Mount("cgroup2", PrivateCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("no cgroup v2 mounted, and mounting one at %s failed: %w", PrivateCgroup2, err)
	}
	return PrivateCgroup2, nil
}

func isCgroup2(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC
}

// sameNamespace reports whether this process shares PID 1's namespace of
// the kind (mnt, cgroup); true when it cannot tell.
func sameNamespace(kind string) bool {
	var a, b unix.Stat_t
	if unix.Stat("/proc/self/ns/"+kind, &a) != nil || unix.Stat("/proc/1/ns/"+kind, &b) != nil {
		return true
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// findCgroup2 reads this process's mounts; /sys/fs/cgroup first.
func findCgroup2() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 || qf[0] != "cgroup2" || pf[3] != "/" {
			continue
		}
		found = append(found, unescape(pf[4]))
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading mounts: %w", err)
	}
	for _, p := range found {
		if p == "/sys/fs/cgroup" {
			return p, nil
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return "", nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
