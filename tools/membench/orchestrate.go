package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"k8s.io/apimachinery/pkg/api/resource"
)

const bpffs = "/sys/fs/bpf"

func orchestrate(podList, limitFlag, build, baseBin, baseLimitFlag string) ([]Result, error) {
	limit, err := memoryLimit(limitFlag)
	if err != nil {
		return nil, err
	}
	cg, err := newCgroupParent()
	if err != nil {
		return nil, err
	}
	var u unix.Utsname
	unix.Uname(&u)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type variant struct {
		build, bin string
		limit      int64
	}
	variants := []variant{{build, self, limit}}
	if baseBin != "" {
		bl, err := memoryLimit(baseLimitFlag)
		if err != nil {
			return nil, err
		}
		variants = append(variants, variant{"baseline", baseBin, bl})
	}
	var out []Result
	for _, s := range strings.Split(podList, ",") {
		pods, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("pod count %q: %w", s, err)
		}
		for _, v := range variants {
			r := Result{Build: v.build, Kernel: unix.ByteSliceToString(u.Release[:]), Pods: pods,
				Capacity: max(pods, 110), LimitBytes: v.limit}
			if err := measure(&r, cg, v.bin); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// memoryLimit is the flag's value, or the DaemonSet's memory limit.
func memoryLimit(flagVal string) (int64, error) {
	s := flagVal
	if s == "" {
		b, err := os.ReadFile(findUp("manifests/daemonset.yaml"))
		if err != nil {
			return 0, fmt.Errorf("reading the DaemonSet's memory limit: %w", err)
		}
		m := regexp.MustCompile(`(?s)limits:\s*\n\s*memory:\s*(\S+)`).FindSubmatch(b)
		if m == nil {
			return 0, errors.New("manifests/daemonset.yaml has no memory limit")
		}
		s = string(m[1])
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: %w", s, err)
	}
	return q.Value(), nil
}

func findUp(rel string) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, rel)); err == nil {
			return filepath.Join(dir, rel)
		}
		next := filepath.Dir(dir)
		if next == dir {
			return rel
		}
		dir = next
	}
}

// cgroup files of either hierarchy.
type cgroupParent struct {
	dir                     string
	v2                      bool
	limit, usage, peak, add string
}

func newCgroupParent() (*cgroupParent, error) {
	var fs unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		return v2Parent("/sys/fs/cgroup")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		// cgroup v1: under this process's own memory cgroup.
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "memory" {
				return &cgroupParent{dir: "/sys/fs/cgroup/memory" + f[2], limit: "memory.limit_in_bytes",
					usage: "memory.usage_in_bytes", peak: "memory.max_usage_in_bytes"}, nil
			}
		}
	}
	// A guest: nothing mounted yet.
	if err := unix.Mount("none", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
		return nil, fmt.Errorf("mounting cgroup2: %w", err)
	}
	return v2Parent("/sys/fs/cgroup")
}

func v2Parent(root string) (*cgroupParent, error) {
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		return nil, fmt.Errorf("enabling the memory controller: %w", err)
	}
	return &cgroupParent{dir: root, v2: true, limit: "memory.max", usage: "memory.current", peak: "memory.peak"}, nil
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// measure runs one loader in a fresh cgroup, netns and pin directory.
func measure(r *Result, cg *cgroupParent, self string) error {
	tag := fmt.Sprintf("ksdpm%d", r.Pods)
	ns := tag
	run("ip", "netns", "del", ns)
	if err := run("ip", "netns", "add", ns); err != nil {
		return err
	}
	defer run("ip", "netns", "del", ns)
	var batch strings.Builder
	for i := 0; i < r.Pods; i++ {
		fmt.Fprintf(&batch, "link add %sh%d type veth peer name %sp%d\n", tag, i, tag, i)
	}
	if r.Pods > 0 {
		cmd := exec.Command("ip", "-n", ns, "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("creating %d veths: %v: %s", r.Pods, err, out)
		}
	}
	pins := filepath.Join(bpffs, tag+"-pins")
	os.RemoveAll(pins)
	defer os.RemoveAll(pins)
	dir := filepath.Join(cg.dir, tag)
	os.Remove(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	defer func() {
		// The maps are freed once unpinned (and their programs gone):
		// wait for the charge to leave before removing the cgroup.
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, cg.limit), []byte(strconv.FormatInt(r.LimitBytes, 10)), 0); err != nil {
		return fmt.Errorf("setting the memory limit: %w", err)
	}
	// The shell enters the cgroup, then becomes the loader in the netns.
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec nsenter --net=/run/netns/%s %s -load -pods %d -capacity %d -pins %s -prefix %s`,
		dir, ns, self, r.Pods, r.Capacity, pins, tag)
	start := time.Now()
	cmd := exec.Command("sh", "-c", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r.Seconds = time.Since(start).Seconds()
	r.OK = err == nil
	if err != nil {
		r.Error = strings.TrimSpace(stderr.String())
		if r.Error == "" {
			r.Error = err.Error()
		}
	}
	r.Maps = map[string]int64{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "MEMLOCK" {
			n, _ := strconv.ParseInt(f[2], 10, 64)
			r.Maps[f[1]] += n
			r.MemlockBytes += n
		}
	}
	r.PeakBytes = readInt(filepath.Join(dir, cg.peak))
	r.AfterBytes = readInt(filepath.Join(dir, cg.usage))
	return nil
}
