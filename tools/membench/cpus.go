package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// onlineAllCPUs brings every offline CPU online: run.sh boots guests of
// more than 8 CPUs with maxcpus=1, because TCG panicked when every vCPU
// ran while the guest kernel live-patched its text at boot (the same as
// tools/bench/agentguest).
func onlineAllCPUs() (int, error) {
	paths, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/online")
	n := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) == "1" {
			continue
		}
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			return n, fmt.Errorf("onlining %s: %w", p, err)
		}
		n++
	}
	return n, nil
}

// onlineCPUs counts the online CPUs (runtime.NumCPU is fixed at the
// process's start, before onlineAllCPUs).
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, _ := strconv.Atoi(lo)
		if !ok {
			n++
			continue
		}
		z, _ := strconv.Atoi(hi)
		n += z - a + 1
	}
	return n
}
