package kube

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// APIRetry is how often, at most, the informers retry their list or watch
// while the API server cannot be reached (plus up to as much jitter).
const APIRetry = 500 * time.Millisecond

// patientLW makes an informer wait out an API outage at a fixed pace
// instead of in the reflector's exponential backoff. client-go retries a
// refused list or watch after 0.8 s, 1.6 s, 3.2 s … up to 30 s, each
// jittered up to twice as long; after a one-minute outage the agent would
// learn of changes up to a minute after the API server is back (22 s
// measured once here, for a 60 s outage). While the server is unreachable —
// connection refused or reset, a dial timeout, no route — a list or watch
// retries here every 0.5–1 s, which costs one refused TCP connect per try,
// and reaches the server within a second of its return. Answers from a
// server that is up (429, 5xx, 410 Gone) go back to the reflector as they
// are, and with them its backoff, which protects a loaded server.
type patientLW struct {
	lw cache.ListerWatcherWithContext
}

func patient(lw cache.ListerWatcher) cache.ListerWatcher {
	return patientLW{lw: cache.ToListerWatcherWithContext(lw)}
}

func (p patientLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	for {
		obj, err := p.lw.ListWithContext(ctx, opts)
		if err == nil || !Unreachable(err) || !pause(ctx) {
			return obj, err
		}
	}
}

func (p patientLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	for {
		w, err := p.lw.WatchWithContext(ctx, opts)
		if err == nil || !Unreachable(err) || !pause(ctx) {
			return w, err
		}
	}
}

// List and Watch satisfy cache.ListerWatcher; the reflector calls the
// context-aware methods above.
func (p patientLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p patientLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

// pause waits APIRetry plus jitter (so that the agents of many nodes do not
// reconnect in lockstep); false if ctx ended first.
func pause(ctx context.Context) bool {
	d := APIRetry + rand.N(APIRetry)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Unreachable reports an error that says the API server could not be
// reached at all, as opposed to an answer from it.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) {
		return true
	}
	if errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
