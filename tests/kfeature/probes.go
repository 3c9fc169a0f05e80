package kfeature

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inScratchNetns runs fn on a thread moved into a new, empty network
// namespace. The thread is never returned to the Go scheduler's pool: the
// goroutine exits still locked, so the runtime discards the thread, and
// the namespace dies with it (nothing else holds it).
func inScratchNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

var (
	fqOnce sync.Once
	fqErr  error
)

// HaveSchFQ probes for the fq qdisc (EDT pacing, kubeshaper's pace mode
// and delay): it installs one on the loopback of a scratch netns. The
// error wraps ErrNotSupported when the kernel has no sch_fq (the kernel
// answers ENOENT, "unknown qdisc kind", after failing to load a module).
func HaveSchFQ() error {
	fqOnce.Do(func() {
		fqErr = inScratchNetns(func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			fq := netlink.NewFq(netlink.QdiscAttrs{
				LinkIndex: lo.Attrs().Index,
				Handle:    netlink.MakeHandle(1, 0),
				Parent:    netlink.HANDLE_ROOT,
			})
			err = netlink.QdiscAdd(fq)
			if errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("fq qdisc: %w (%v)", ErrNotSupported, err)
			}
			if err != nil {
				return fmt.Errorf("adding an fq qdisc: %w", err)
			}
			return nil
		})
	})
	return fqErr
}

var (
	tcxOnce sync.Once
	tcxErr  error
)

// HaveTCX probes for tcx links (kernel 6.6): it attaches a trivial
// program to the loopback of a scratch netns.
func HaveTCX() error {
	tcxOnce.Do(func() {
		tcxErr = inScratchNetns(func() error {
			if err := rlimit.RemoveMemlock(); err != nil {
				return err
			}
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Type:    ebpf.SchedCLS,
				License: "Apache-2.0",
				Instructions: asm.Instructions{
					asm.Mov.Imm(asm.R0, -1), // TC_ACT_UNSPEC / TCX_NEXT
					asm.Return(),
				},
			})
			if err != nil {
				return fmt.Errorf("loading a trivial tc program: %w", err)
			}
			defer prog.Close()
			lo, err := net.InterfaceByName("lo")
			if err != nil {
				return err
			}
			l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return fmt.Errorf("tcx: %w", err)
			}
			return l.Close()
		})
	})
	return tcxErr
}

// HaveTCHelper probes whether tc (SchedCLS) programs may call helper, e.g.
// asm.FnGetNetnsCookie (6.13 for tc programs).
func HaveTCHelper(helper asm.BuiltinFunc) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	if err := features.HaveProgramHelper(ebpf.SchedCLS, helper); err != nil {
		return fmt.Errorf("helper %s in tc programs: %w", helper, err)
	}
	return nil
}
