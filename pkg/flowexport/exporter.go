package flowexport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubeshaper/kubeshaper/pkg/datapath"
)

// Source is what the exporter reads and expires (*datapath.Datapath).
type Source interface {
	// FlowsBatch lists the records (cheaply: batch lookups).
	FlowsBatch() ([]datapath.Flow, error)
	// ExpireFlows removes and returns the records idle that long or of
	// interfaces in gone.
	ExpireFlows(idle time.Duration, gone map[uint32]bool) ([]datapath.Flow, error)
	FlowClock() (func(jiffies uint64) time.Time, error)
}

// PodInfo labels the flows of one host interface.
type PodInfo struct {
	Namespace, Pod, Workload, WorkloadKind, HostVeth string
}

// Options of an Exporter.
type Options struct {
	// Idle is how long a flow may see no packet before it is exported and
	// removed (default 30 s).
	Idle time.Duration
	// Every is how often the map is read (default 5 s).
	Every time.Duration
}

// liveFlow is a record as last read, with the pod it belonged to then (an
// interface index may be reused by the next pod's veth).
type liveFlow struct {
	f    datapath.Flow
	info PodInfo
	ok   bool
}

// Exporter writes one JSON object per ended flow to a writer (JSON lines).
type Exporter struct {
	src  Source
	pods func() map[uint32]PodInfo
	opts Options

	mu    sync.Mutex
	w     *bufio.Writer
	enc   *json.Encoder
	live  map[datapath.FlowKey]liveFlow // as of the last read
	known map[uint32]PodInfo            // last known pod per interface
	clock func(uint64) time.Time        // of the last read

	exported, failures atomic.Uint64
	active             atomic.Int64
}

// New returns an exporter writing to w. pods lists the interfaces the agent
// applies state to: flows of any other interface are exported as their
// pod's (pod_gone) and removed.
func New(src Source, pods func() map[uint32]PodInfo, w io.Writer, opts Options) *Exporter {
	if opts.Idle <= 0 {
		opts.Idle = 30 * time.Second
	}
	if opts.Every <= 0 {
		opts.Every = 5 * time.Second
	}
	bw := bufio.NewWriter(w)
	return &Exporter{src: src, pods: pods, opts: opts, w: bw, enc: json.NewEncoder(bw),
		live: map[datapath.FlowKey]liveFlow{}, known: map[uint32]PodInfo{}}
}

// Run exports every Every until ctx ends, then exports and removes every
// remaining record (EndShutdown) and returns. Errors go to onErr.
func (e *Exporter) Run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(e.opts.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := e.Flush(); err != nil && onErr != nil {
				onErr(err)
			}
			return
		case <-t.C:
			if err := e.Tick(); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// Tick exports the flows that ended since the last tick.
func (e *Exporter) Tick() error { return e.pass(false) }

// Flush exports and removes every record (the agent is exiting).
func (e *Exporter) Flush() error { return e.pass(true) }

func (e *Exporter) pass(final bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	pods := e.pods()
	for idx, info := range pods {
		e.known[idx] = info
	}
	gone := map[uint32]bool{}
	for k := range e.live {
		if _, ok := pods[k.Ifindex]; !ok {
			gone[k.Ifindex] = true
		}
	}
	var errs []error
	clock, err := e.src.FlowClock()
	if err != nil {
		e.failures.Add(1)
		return err // nothing can be dated: try again next time
	}
	idle := e.opts.Idle
	if final {
		idle = 0
	}
	// One cheap listing; the datapath's expiry (which lists again and
	// reads the clock per record) only when some record is due.
	all, err := e.src.FlowsBatch()
	if err != nil {
		e.failures.Add(1)
		return err
	}
	now := time.Now()
	due := final
	for _, f := range all {
		if gone[f.Key.Ifindex] || now.Sub(clock(f.Stats.LastJiffies)) >= idle {
			due = true
			break
		}
	}
	var expired []datapath.Flow
	if due {
		expired, err = e.src.ExpireFlows(idle, gone)
		if err != nil {
			errs = append(errs, err) // what was expired before the error is in expired
		}
	}
	stamp := now.UTC().Format(time.RFC3339Nano)
	done := make(map[datapath.FlowKey]bool, len(expired))
	for _, f := range expired {
		end := EndIdle
		switch {
		case gone[f.Key.Ifindex]:
			end = EndPodGone
		case final:
			end = EndShutdown
		}
		info, ok := e.known[f.Key.Ifindex]
		if old, seen := e.live[f.Key]; seen && gone[f.Key.Ifindex] {
			info, ok = old.info, old.ok
		}
		errs = append(errs, e.write(f, clock, end, stamp, info, ok))
		done[f.Key] = true
	}
	cur := make(map[datapath.FlowKey]liveFlow, len(all))
	for _, f := range all {
		if !done[f.Key] {
			info, ok := e.known[f.Key.Ifindex]
			cur[f.Key] = liveFlow{f, info, ok}
		}
	}
	for k, old := range e.live {
		if _, ok := cur[k]; !ok && !done[k] {
			// Gone without our expiry: exported as last read, with the
			// clock of that read (its ages were measured then).
			errs = append(errs, e.write(old.f, e.clock, EndVanished, stamp, old.info, old.ok))
		}
	}
	e.live, e.clock = cur, clock
	e.active.Store(int64(len(cur)))
	for idx := range e.known {
		if _, ok := pods[idx]; !ok && !hasIfindex(cur, idx) {
			delete(e.known, idx)
		}
	}
	return e.finish(errs)
}

func hasIfindex(m map[datapath.FlowKey]liveFlow, idx uint32) bool {
	for k := range m {
		if k.Ifindex == idx {
			return true
		}
	}
	return false
}

func (e *Exporter) finish(errs []error) error {
	if err := e.w.Flush(); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil {
		e.failures.Add(1)
	}
	return err
}

func (e *Exporter) write(f datapath.Flow, clock func(uint64) time.Time, end, now string, info PodInfo, ok bool) error {
	r := NewRecord(f, clock)
	r.Time, r.End = now, end
	if ok {
		r.Namespace, r.Pod, r.Workload, r.WorkloadKind, r.HostVeth = info.Namespace, info.Pod, info.Workload, info.WorkloadKind, info.HostVeth
	}
	if err := e.enc.Encode(r); err != nil {
		return err
	}
	e.exported.Add(1)
	return nil
}

// Exported counts records written; Failures counts passes with an error;
// Active is the number of flow records at the last read.
func (e *Exporter) Exported() uint64 { return e.exported.Load() }
func (e *Exporter) Failures() uint64 { return e.failures.Load() }
func (e *Exporter) Active() int64    { return e.active.Load() }
