package datapath

import "time"

// FlowClock converts flow timestamps (jiffies) to wall-clock time with one
// reading of the kernel's clock, for callers that convert many records at
// once (Seen reads the clock twice per record).
func (d *Datapath) FlowClock() (func(jiffies uint64) time.Time, error) {
	hz, err := d.HZ()
	if err != nil {
		return nil, err
	}
	nowJ, _, err := d.readClock()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return func(j uint64) time.Time {
		if j >= nowJ {
			return now
		}
		return now.Add(-time.Duration(float64(nowJ-j) / hz * float64(time.Second)))
	}, nil
}
