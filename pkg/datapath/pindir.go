package datapath

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where the kernel's bpffs is conventionally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// PinDirEnv overrides where the bpffs is found, for processes started by
// tests and scripts (the CLI's --bpffs is passed as Options.BPFFS).
const PinDirEnv = "KUBESHAPER_BPFFS"

// initNetInode is init_net's fixed inode number on kernels that give it
// one (PROC_NET_INIT_INO); older kernels are compared with PID 1's netns.
const initNetInode = 0xEFFFFFF9

// DefaultPinDir is where kubeshaper pins its maps for the network namespace
// the caller runs in: <bpffs>/kubeshaper, or
// <bpffs>/kubeshaper/netns-<inode>-<cookie> outside the node's initial netns,
// because interface indexes are per netns and a test "node" must not share
// keys with the host (netnsid.go: why the cookie).
//
// The bpffs is, in order: $KUBESHAPER_BPFFS; /sys/fs/bpf; the /sys/fs/bpf of
// the nearest ancestor process that sees one. The last covers `ip netns exec
// node kubeshaper …`, which remounts /sys in a private mount namespace and so
// hides the host's bpffs from the command it runs.
func DefaultPinDir() (string, error) {
	base, err := findBPFFS()
	if err != nil {
		return "", err
	}
	return pinDirIn(base)
}

func pinDirIn(base string) (string, error) {
	dir := filepath.Join(base, "kubeshaper")
	id, err := ownNetnsID()
	if err != nil {
		return "", err
	}
	if !isInitNetns(id.ino) {
		dir = filepath.Join(dir, id.dirName())
	}
	return dir, nil
}

// PinDirOfNetns is DefaultPinDir for the netns behind nsPath (a bind
// mount such as /var/run/netns/NAME) under the bpffs base.
func PinDirOfNetns(base, nsPath string) (string, error) {
	id, err := netnsIDOf(nsPath)
	if err != nil {
		return "", err
	}
	if isInitNetns(id.ino) {
		return filepath.Join(base, "kubeshaper"), nil
	}
	return filepath.Join(base, "kubeshaper", id.dirName()), nil
}

func findBPFFS() (string, error) {
	if env := os.Getenv(PinDirEnv); env != "" {
		if !isBPFFS(env) {
			return "", fmt.Errorf("$%s=%s is not a bpffs mount", PinDirEnv, env)
		}
		return env, nil
	}
	if isBPFFS(DefaultBPFFS) {
		return DefaultBPFFS, nil
	}
	for pid := os.Getppid(); pid > 1; pid = parentOf(pid) {
		alt := fmt.Sprintf("/proc/%d/root%s", pid, DefaultBPFFS)
		if isBPFFS(alt) {
			return alt, nil
		}
	}
	return "", fmt.Errorf("no bpffs found at %s: mount one (mount -t bpf bpf %s), mount the host's %s into the pod, or set $%s", DefaultBPFFS, DefaultBPFFS, DefaultBPFFS, PinDirEnv)
}

// parentOf reads a process's parent PID; 0 when it cannot.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may contain spaces; fields start after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func isInitNetns(ino uint64) bool {
	if ino == initNetInode {
		return true
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/1/ns/net", &st); err != nil {
		return false
	}
	return st.Ino == ino
}

func isBPFFS(path string) bool {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return false
	}
	return uint32(fs.Type) == unix.BPF_FS_MAGIC
}

func ensurePinDir(dir string) error {
	parent := dir
	for !isBPFFS(parent) {
		next := filepath.Dir(parent)
		if next == parent {
			return fmt.Errorf("pin directory %s is not on a bpffs: mount one (mount -t bpf bpf /sys/fs/bpf) or point --bpffs (agent) or $KUBESHAPER_BPFFS (CLI) at one", dir)
		}
		parent = next
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating pin directory %s: %w", dir, err)
	}
	return nil
}

// OpenDefault opens the datapath pinned at DefaultPinDir.
func OpenDefault() (*Datapath, error) { return OpenDefaultWith(Options{}) }

// OpenDefaultWith is OpenDefault with the maps sized by o.
func OpenDefaultWith(o Options) (*Datapath, error) {
	if o.BPFFS != "" && !isBPFFS(o.BPFFS) {
		return nil, fmt.Errorf("%s is not a bpffs mount (mount one with: mount -t bpf bpf %s)", o.BPFFS, o.BPFFS)
	}
	base := o.BPFFS
	if base == "" {
		var err error
		if base, err = findBPFFS(); err != nil {
			return nil, err
		}
	}
	dir, err := pinDirIn(base)
	if err != nil {
		return nil, err
	}
	return OpenWith(dir, o)
}
