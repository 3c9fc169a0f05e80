package reconcile

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// InitialSync reconciles every pod in the cache once, synchronously, and
// then removes whatever a previous agent left that no pod wants. Rules a
// previous agent applied are adopted: re-applying them swaps in this
// process's program and keeps the pinned bucket state and counters.
func (r *Reconciler) InitialSync(workers int) (pods int, err error) {
	all, err := r.w.Pods.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	keys := make(chan string)
	failed := make(chan error, len(all))
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range keys {
				if err := r.Sync(key); err != nil {
					// Left to the queue's retries; start-up goes on.
					failed <- err
					r.w.Queue.AddRateLimited(key)
				}
			}
		}()
	}
	for _, p := range all {
		key, _ := cache.MetaNamespaceKeyFunc(p)
		keys <- key
	}
	close(keys)
	wg.Wait()
	close(failed)
	var errs []error
	for err := range failed {
		errs = append(errs, err)
	}
	if err := r.CollectGarbage(); err != nil {
		errs = append(errs, err)
	}
	r.initialDone.Store(true)
	return len(all), errors.Join(errs...)
}

// Run processes the queue with workers until stop closes, collecting
// garbage every gcEvery.
func (r *Reconciler) Run(stop <-chan struct{}, workers int, gcEvery time.Duration) {
	go func() {
		<-stop
		r.w.Queue.ShutDown()
	}()
	done := make(chan struct{})
	for range workers {
		go func() {
			for r.processNext() {
			}
			done <- struct{}{}
		}()
	}
	go r.holdPositions(stop)
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := r.CollectGarbage(); err != nil {
				r.log.WithError(err).Warn("collecting leftovers")
			}
		case <-stop:
			for range workers {
				<-done
			}
			return
		}
	}
}

func (r *Reconciler) processNext() bool {
	key, quit := r.w.Queue.Get()
	if quit {
		return false
	}
	defer r.w.Queue.Done(key)
	start := time.Now()
	err := r.Sync(key)
	r.observe(key, time.Since(start), err)
	if err != nil {
		r.errors.Add(1)
		r.log.WithError(err).WithField("pod", key).Warn("reconcile failed, will retry")
		r.w.Queue.AddRateLimited(key)
		return true
	}
	r.w.Queue.Forget(key)
	return true
}

// CollectGarbage removes map entries and filters no pod claims: leftovers
// of a crash, of a pod deleted while the agent was down, or of a veth
// deleted under us.
func (r *Reconciler) CollectGarbage() error {
	r.prunePosted()
	r.gcMu.Lock()
	defer r.gcMu.Unlock()
	claimed := map[int]bool{}
	r.mu.Lock()
	for _, st := range r.applied {
		claimed[st.ifc.Index] = true
	}
	r.mu.Unlock()
	var errs []error
	// Time-limit clocks of pods that are gone (kept for every pod still
	// on the node, shaped or not: an expired rule must stay expired).
	if pods, err := r.w.Pods.List(labels.Everything()); err == nil {
		live := make([]string, len(pods))
		for i, p := range pods {
			live[i] = string(p.UID)
		}
		if err := r.node.ForgetRuleSets(live); err != nil {
			errs = append(errs, fmt.Errorf("forgetting time limits of deleted pods: %w", err))
		}
	}
	removed, err := r.node.CollectLeftovers(func(ifindex int) bool { return claimed[ifindex] })
	for _, idx := range removed {
		r.log.WithField("ifindex", idx).Info("removed leftover kubeshaper state no pod wants")
	}
	return errors.Join(append(errs, err)...)
}

// Cleanup removes everything kubeshaper put on this node: every pod's
// filters, qdiscs and map entries, then the pinned maps themselves.
func (r *Reconciler) Cleanup() error {
	r.gcMu.Lock()
	r.mu.Lock()
	states := r.applied
	r.applied = map[string]*podState{}
	r.mu.Unlock()
	// In parallel: each clear is a few netlink round trips, mostly waiting.
	work := make(chan *podState)
	failed := make(chan error, len(states))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for st := range work {
				if err := r.node.Clear(st.ifc); err != nil {
					failed <- err
				}
			}
		}()
	}
	for _, st := range states {
		work <- st
	}
	close(work)
	wg.Wait()
	close(failed)
	r.gcMu.Unlock()
	var errs []error
	for err := range failed {
		errs = append(errs, err)
	}
	if err := r.CollectGarbage(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := r.node.RemovePins(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ready reports whether the start-up reconcile has run.
func (r *Reconciler) Ready() bool { return r.initialDone.Load() }

// Stats are the reconciler's own health figures.
type Stats struct {
	Pods     int
	Errors   uint64
	LastSync time.Time
}

// Stats returns a snapshot.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	last, _ := r.lastSync.Load().(time.Time)
	return Stats{Pods: len(r.applied), Errors: r.errors.Load(), LastSync: last}
}

func (r *Reconciler) observe(key string, took time.Duration, err error) {
	if err == nil {
		r.lastSync.Store(time.Now())
	}
	r.log.WithFields(logrus.Fields{"pod": key, "took": took}).Debug("synced")
}

type counters struct {
	initialDone atomic.Bool
	errors      atomic.Uint64
	lastSync    atomic.Value
}
