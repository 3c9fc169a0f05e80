package podnet

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

const threadNetns = "/proc/thread-self/ns/net"

func statIno(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// requireAllThreadsIn fails if any thread of this process is in a netns
// other than ino: the invariant Do exists to keep.
func requireAllThreadsIn(t *testing.T, ino uint64) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := statIno(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if got != ino {
			t.Errorf("thread %s is in netns inode %d, want %d", task.Name(), got, ino)
		}
	}
}

func TestDoRestoresNetnsFromManyGoroutines(t *testing.T) {
	requireRoot(t)
	target := boundNetns(t, nsPrefix+randomSuffix(t)+"-do")
	home := inode(t, "/proc/self/ns/net")
	want := inode(t, target.path)

	const goroutines, rounds = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				err := Do(target.path, func() error {
					got, err := statIno(threadNetns)
					if err != nil {
						return err
					}
					if got != want {
						return fmt.Errorf("fn ran in netns %d, want %d", got, want)
					}
					return nil
				})
				if err != nil {
					errs <- err
					continue
				}
				// This goroutine is unlocked, so this samples some pooled
				// thread: none may be in the target netns.
				if got, err := statIno(threadNetns); err != nil || got != home {
					errs <- fmt.Errorf("after Do: thread netns %d (%v), want %d", got, err, home)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireAllThreadsIn(t, home)
}

func TestDoReturnsFnError(t *testing.T) {
	requireRoot(t)
	target := boundNetns(t, nsPrefix+randomSuffix(t)+"-err")
	sentinel := fmt.Errorf("boom")
	if err := Do(target.path, func() error { return sentinel }); err != sentinel {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	requireAllThreadsIn(t, inode(t, "/proc/self/ns/net"))
}

// fn misbehaves: it moves its thread to yet another netns. Do must still
// bring the thread home, since it restores to the netns it saved.
func TestDoRestoresAfterFnSwitchesNetns(t *testing.T) {
	requireRoot(t)
	sfx := randomSuffix(t)
	target := boundNetns(t, nsPrefix+sfx+"-a")
	other := boundNetns(t, nsPrefix+sfx+"-b")
	err := Do(target.path, func() error {
		h, err := netns.GetFromPath(other.path)
		if err != nil {
			return err
		}
		defer h.Close()
		return netns.Set(h)
	})
	if err != nil {
		t.Fatal(err)
	}
	requireAllThreadsIn(t, inode(t, "/proc/self/ns/net"))
}

func TestDoRepanicsAfterRestoring(t *testing.T) {
	requireRoot(t)
	target := boundNetns(t, nsPrefix+randomSuffix(t)+"-panic")
	func() {
		defer func() {
			if v := recover(); v != "in the pod" {
				t.Errorf("recovered %v, want the panic of fn", v)
			}
		}()
		_ = Do(target.path, func() error { panic("in the pod") })
		t.Error("Do returned after fn panicked")
	}()
	requireAllThreadsIn(t, inode(t, "/proc/self/ns/net"))
}

func TestDoRejectsWhatIsNotANetns(t *testing.T) {
	requireRoot(t)
	for _, path := range []string{"/proc/self/ns/uts", "/nonexistent/netns"} {
		called := false
		err := Do(path, func() error { called = true; return nil })
		if err == nil || called {
			t.Errorf("Do(%s): err %v, fn called %v; want an error and no call", path, err, called)
		}
	}
	requireAllThreadsIn(t, inode(t, "/proc/self/ns/net"))
}
