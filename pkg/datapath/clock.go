package datapath

import "golang.org/x/sys/unix"

// monotonicNow is bpf_ktime_get_ns()'s clock (CLOCK_MONOTONIC).
func monotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// bucketNow is the token bucket's clock as the programs read it where the
// kernel has bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE, one tick
// behind at most): a bucket's last refill written from here is never
// ahead of the program's next reading. On older kernels the programs read
// CLOCK_MONOTONIC, which is ahead of this by under a tick: one tick of
// credit once per new bucket.
func bucketNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts)
	return uint64(ts.Nano())
}
