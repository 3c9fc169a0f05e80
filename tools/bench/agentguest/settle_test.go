package agentguest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeshaper/kubeshaper/tests/agentenv"
)

// settleAfter is when, after the agent's start, the second reading is
// taken: past its first full resync (the default period, 1 min), with
// start-up's garbage collected and its freed pages back with the OS or
// not, as a node would see the agent for the rest of its life.
const settleAfter = 75 * time.Second

// settled waits until at, then reads the agent's cgroup and process twice:
// as they are, and after the kernel has drained the memory cgroup's
// per-CPU charge caches.
//
// Why the second: the kernel charges a cgroup in batches (64 pages per
// CPU, mm/memcontrol.c MEMCG_CHARGE_BATCH) and keeps the unused rest of a
// batch in a per-CPU stock. memory.current counts the stock; memory.stat
// counts only what is allocated. A process whose threads ran on N CPUs
// can have up to N × 256 KiB charged and unused — 16 MiB at 64 CPUs,
// 48 MiB at 192 — which the kernel drains itself before it would reclaim
// or OOM-kill at the limit. Writing memory.high below the usage makes it
// drain them (memory_high_write: drain_all_stock, then reclaim what is
// still above): set one page below, read, set back to max.
func settled(t *testing.T, ag *agentenv.Agent, cg string, at time.Time) map[string]any {
	t.Helper()
	out := map[string]any{"seconds_after_start": settleAfter.Seconds()}
	// KUBESHAPER_AGENTGUEST_SCRAPE (a duration): scrape /metrics that
	// often until the reading, as a Prometheus would; the reading is
	// then taken just before the next scrape would be.
	if every, err := time.ParseDuration(os.Getenv("KUBESHAPER_AGENTGUEST_SCRAPE")); err == nil && every > 0 {
		out["scrape_every_s"] = every.Seconds()
		n := 0
		for time.Until(at) > every {
			if _, err := ag.Samples("kubeshaper_agent_pods"); err == nil {
				n++
			}
			time.Sleep(every)
		}
		out["scrapes"] = n
	}
	if d := time.Until(at); d > 0 {
		time.Sleep(d) // a fixed point in the agent's life, not a wait for a condition
	}
	if exited, err := ag.Exited(); exited {
		t.Errorf("agent exited before the settled reading: %v", err)
		return out
	}
	out["before_drain"] = snapshot(ag, cg)
	cur := readInt(filepath.Join(cg, "memory.current"))
	high := filepath.Join(cg, "memory.high")
	if err := os.WriteFile(high, []byte(strconv.FormatInt(cur-4096, 10)), 0); err != nil {
		t.Errorf("memory.high: %v", err)
		return out
	}
	// drain_all_stock queues a work item per CPU and does not wait for
	// them: read until memory.current stops moving (10 s at most).
	last, still := int64(-1), 0
	for i := 0; i < 100 && still < 5; i++ {
		time.Sleep(100 * time.Millisecond)
		c := readInt(filepath.Join(cg, "memory.current"))
		if c == last {
			still++
		} else {
			still = 0
		}
		last = c
	}
	out["after_drain"] = snapshot(ag, cg)
	if err := os.WriteFile(high, []byte("max"), 0); err != nil {
		t.Errorf("memory.high back to max: %v", err)
	}
	return out
}

// snapshot is one reading of the agent's cgroup and process.
func snapshot(ag *agentenv.Agent, cg string) map[string]any {
	st, _ := ag.ProcStatus()
	stat := keyed(filepath.Join(cg, "memory.stat"))
	cur := readInt(filepath.Join(cg, "memory.current"))
	return map[string]any{
		"memory_current": cur,
		"memory_stat":    pick(stat, "anon", "file", "kernel", "percpu", "sock", "shmem", "slab", "vmalloc", "pagetables", "kernel_stack", "active_anon", "inactive_anon", "anon_thp", "thp_fault_alloc", "thp_split_page"),
		"smaps_rollup":   keyedLines(fmt.Sprintf("/proc/%d/smaps_rollup", ag.Pid()), ":"),
		"exe_rss_kib":    exeResident(ag.Pid()),
		// What memory.current holds beyond what memory.stat accounts for.
		"unaccounted":  cur - stat["anon"] - stat["file"] - stat["kernel"] - stat["sock"],
		"vmrss_kib":    st["VmRSS"],
		"rss_anon_kib": st["RssAnon"],
		"rss_file_kib": st["RssFile"],
		"go_runtime":   goRuntime(ag),
		"date":         time.Now().UTC().Format(time.RFC3339),
	}
}

// goRuntime is the agent's Go runtime as its /metrics shows it (one
// scrape; -1 for a sample it lacks, as an agent before go_* had).
func goRuntime(ag *agentenv.Agent) map[string]float64 {
	names := []string{"go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
		"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes",
		"go_memstats_next_gc_bytes", "go_sched_gomaxprocs_threads", "go_threads", "go_goroutines"}
	s, _ := ag.Samples(names...)
	out := map[string]float64{}
	for _, n := range names {
		if v, ok := s[n]; ok {
			out[n] = v
		} else {
			out[n] = -1
		}
	}
	return out
}

// exeResident is the agent's resident memory per mapping kind of its own
// binary (/proc/pid/smaps: "r-xp" text, "r--p" read-only data and the
// pc-line table, "rw-p" data), KiB, and "other_file" for every other file.
func exeResident(pid int) map[string]int64 {
	out := map[string]int64{}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return out
	}
	var key string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4 {
			key = ""
			if len(f) >= 6 && f[5] == exe {
				key = "exe " + f[1]
			} else if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				key = "other_file"
			}
			continue
		}
		if key != "" && len(f) == 3 && f[0] == "Rss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			out[key] += n
		}
	}
	return out
}
