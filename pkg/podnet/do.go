package podnet

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn with its OS thread switched into the network namespace at
// nsPath (a bind mount such as /var/run/netns/x, or /proc/<pid>/ns/net),
// and returns fn's error.
//
// fn runs in a fresh goroutine locked to its OS thread, so the caller's
// thread is never switched. Afterwards the thread is switched back to the
// netns it started in and only then unlocked, i.e. returned to the Go
// scheduler's pool. If switching back fails the thread stays locked: the
// goroutine exits locked and the runtime destroys the thread instead of
// reusing it, so no other goroutine ever runs in the foreign netns.
//
// Constraints on fn: goroutines it starts run on other threads, in the
// process's netns, not in nsPath; it must not call runtime.UnlockOSThread.
// A panic in fn is re-raised in the caller after the thread has been
// restored.
func Do(nsPath string, fn func() error) error {
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("podnet: open netns %s: %w", nsPath, err)
	}
	defer target.Close()

	done := make(chan outcome, 1)
	go runIn(target, nsPath, fn, done)
	out := <-done
	if out.panicked {
		panic(out.panicValue)
	}
	return out.err
}

type outcome struct {
	err        error
	panicked   bool
	panicValue any
}

// runIn is the body of Do's goroutine. It unlocks the thread only on paths
// where the thread is known to be in its original netns.
func runIn(target netns.NsHandle, nsPath string, fn func() error, done chan<- outcome) {
	runtime.LockOSThread()

	home, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread() // nothing switched yet
		done <- outcome{err: fmt.Errorf("podnet: open current netns: %w", err)}
		return
	}
	defer home.Close()

	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread() // setns is all-or-nothing: still home
		done <- outcome{err: fmt.Errorf("podnet: enter netns %s: %w", nsPath, err)}
		return
	}

	out := call(fn)

	if err := netns.Set(home); err != nil {
		// Deliberately no UnlockOSThread: the runtime kills a thread whose
		// goroutine exits locked, which is the only safe fate for it now.
		out.err = errors.Join(out.err,
			fmt.Errorf("podnet: restore netns after %s (thread discarded): %w", nsPath, err))
		done <- out
		return
	}
	runtime.UnlockOSThread()
	done <- out
}

// call runs fn, turning a panic into a value so that the thread can be
// restored before the panic continues in the caller.
func call(fn func() error) (out outcome) {
	defer func() {
		if v := recover(); v != nil {
			out = outcome{panicked: true, panicValue: v}
		}
	}()
	return outcome{err: fn()}
}
