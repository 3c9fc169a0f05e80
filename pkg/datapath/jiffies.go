package datapath

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// jiffyClock converts the kernel's jiffies (flow timestamps) to wall time.
// HZ is not exposed to user space, so it is measured: two readings of
// bpf_jiffies64() 50 ms apart, snapped to the values kernels are built with.
type jiffyClock struct {
	once sync.Once
	hz   float64
	err  error
}

var kernelHZ = []float64{100, 250, 300, 1000}

// readClock runs ks_clock: the current jiffies and CLOCK_MONOTONIC ns.
func (d *Datapath) readClock() (jiffies, ns uint64, err error) {
	if _, err := d.objs.KsClock.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		return 0, 0, fmt.Errorf("reading the kernel's jiffies: %w", err)
	}
	if err := d.objs.KsClockJiffies.Get(&jiffies); err != nil {
		return 0, 0, err
	}
	if err := d.objs.KsClockNs.Get(&ns); err != nil {
		return 0, 0, err
	}
	return jiffies, ns, nil
}

// HZ is the kernel's tick rate.
func (d *Datapath) HZ() (float64, error) {
	d.clock.once.Do(func() {
		j0, t0, err := d.readClock()
		if err != nil {
			d.clock.err = err
			return
		}
		time.Sleep(50 * time.Millisecond)
		j1, t1, err := d.readClock()
		if err != nil {
			d.clock.err = err
			return
		}
		est := float64(j1-j0) / (float64(t1-t0) / 1e9)
		best := kernelHZ[0]
		for _, hz := range kernelHZ {
			if math.Abs(hz-est) < math.Abs(best-est) {
				best = hz
			}
		}
		d.clock.hz = best
	})
	return d.clock.hz, d.clock.err
}
