package datapath

import "golang.org/x/sys/unix"

// monotonicNow is bpf_ktime_get_ns()'s clock (CLOCK_MONOTONIC).
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
