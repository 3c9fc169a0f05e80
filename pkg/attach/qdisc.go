package attach

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	tc "github.com/florianl/go-tc"
	"github.com/florianl/go-tc/core"
	"golang.org/x/sys/unix"
)

// RootQdisc reports the kind and handle of the interface's root qdisc.
// Handle 0 is a kernel default (noqueue on veths, pfifo_fast, mq…);
// QdiscHandle is ours.
func RootQdisc(ifindex int) (kind string, handle uint32, err error) {
	conn, err := dial()
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	q, err := rootQdisc(conn, ifindex)
	if err != nil {
		return "", 0, fail("read root qdisc", ifindex, err)
	}
	return q.Kind, q.Handle, nil
}

// EnsureRootTBF makes a tbf qdisc with our handle the interface's root
// qdisc: rate and burst in bytes (tbf counts L2 bytes, as the wire does),
// latency the longest a packet may wait in its queue. An existing tbf of
// ours is changed in place (replace semantics, no gap without a limit).
// A root qdisc of another tool is refused with ErrForeignQdisc.
//
// go-tc has no TCA_TBF_RATE64, so rates must be below 2^32 bytes/s
// (≈ 34 Gbit/s); the kernel's burst attribute is 32 bits as well.
func EnsureRootTBF(ifindex int, rateBytesPerSec, burstBytes uint64, latency time.Duration) error {
	const op = "set root tbf"
	switch {
	case rateBytesPerSec == 0 || rateBytesPerSec > math.MaxUint32:
		return fail(op, ifindex, fmt.Errorf("rate %d bytes/s out of range (1 … 2^32-1)", rateBytesPerSec))
	case burstBytes == 0 || burstBytes > math.MaxUint32:
		return fail(op, ifindex, fmt.Errorf("burst %d bytes out of range (1 … 2^32-1)", burstBytes))
	case latency <= 0:
		return fail(op, ifindex, fmt.Errorf("latency %v must be positive", latency))
	}

	if err := initSchedClock(); err != nil {
		return fail(op, ifindex, err)
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := claimRoot(conn, ifindex, "tbf"); err != nil {
		return fail(op, ifindex, err)
	}

	// The queue holds what drains within latency plus a full burst, as
	// tc's `latency` option computes it.
	// (Microseconds: rate < 2^32 times any sane latency fits in 64 bits.)
	limit := min(rateBytesPerSec*uint64(latency.Microseconds())/1e6+burstBytes, math.MaxUint32)
	burst := uint32(burstBytes)
	obj := rootObject(ifindex, "tbf")
	obj.Tbf = &tc.Tbf{
		Parms: &tc.TbfQopt{
			Rate:  tc.RateSpec{Rate: uint32(rateBytesPerSec), Linklayer: linklayerEthernet},
			Limit: uint32(limit),
			// Buffer is the burst as transmission time in scheduler ticks;
			// the kernel prefers TCA_TBF_BURST below, tc sets both.
			Buffer: core.XmitTime(rateBytesPerSec, burst),
		},
		Burst: &burst,
	}
	if err := conn.Qdisc().Replace(obj); err != nil {
		return fail(op, ifindex, err)
	}
	return nil
}

// schedClock: go-tc converts tbf's burst into scheduler ticks (and builds
// its rate table) with the kernel's packet-scheduler clock parameters,
// which it reads from /proc/net/psched once asked to.
var schedClock struct {
	once sync.Once
	err  error
}

func initSchedClock() error {
	schedClock.once.Do(func() {
		if err := core.InitializeClock(); err != nil {
			schedClock.err = fmt.Errorf("read the packet scheduler's clock (/proc/net/psched): %w", err)
		}
	})
	return schedClock.err
}

// EnsureRootFQ makes an fq qdisc with our handle the interface's root
// qdisc, as EDT pacing needs (fq releases each packet at its skb->tstamp).
// horizon bounds how far in the future a timestamp may lie (0: the kernel
// default, 10 s); horizonDrop drops packets beyond it instead of capping
// their timestamp. Where the kernel lacks sch_fq the error wraps
// ErrFQUnavailable and the kernel's own error.
//
// If the root is our tbf it is removed first: the kernel cannot change a
// qdisc's kind in place, so the interface briefly has its default qdisc
// (and keeps it if fq then fails).
func EnsureRootFQ(ifindex int, horizonDrop bool, horizon time.Duration) error {
	const op = "set root fq"
	if horizon < 0 || horizon.Microseconds() > math.MaxUint32 {
		return fail(op, ifindex, fmt.Errorf("horizon %v out of range", horizon))
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := claimRoot(conn, ifindex, "fq"); err != nil {
		return fail(op, ifindex, err)
	}

	var drop uint8
	if horizonDrop {
		drop = 1
	}
	fq := &tc.Fq{HorizonDrop: &drop}
	if horizon > 0 {
		usec := uint32(horizon.Microseconds())
		fq.Horizon = &usec
	}
	obj := rootObject(ifindex, "fq")
	obj.Fq = fq
	err = conn.Qdisc().Replace(obj)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		// ENOENT on create is the kernel's "Specified qdisc kind is
		// unknown": not built in, and no module could be loaded.
		return fail(op, ifindex, fmt.Errorf("%w: %w", ErrFQUnavailable, err))
	default:
		return fail(op, ifindex, err)
	}
}

// RemoveRootQdiscIfOurs deletes the root qdisc if it carries our handle,
// which gives the interface back its kernel default. Anything else — the
// default itself, another tool's qdisc, a vanished interface — is left
// alone and is not an error.
func RemoveRootQdiscIfOurs(ifindex int) error {
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	q, err := rootQdisc(conn, ifindex)
	if errors.Is(err, errNoRoot) {
		return nil
	}
	if err != nil {
		return fail("remove root qdisc", ifindex, err)
	}
	if q.Handle != QdiscHandle {
		return nil
	}
	if err := deleteRoot(conn, ifindex, q.Kind); err != nil {
		return fail("remove root qdisc", ifindex, err)
	}
	return nil
}

// claimRoot checks that kubeshaper may install a root qdisc of kind: the
// root is a kernel default or ours. Ours of another kind is deleted, since
// a replace cannot change a qdisc's kind.
func claimRoot(conn *tc.Tc, ifindex int, kind string) error {
	q, err := rootQdisc(conn, ifindex)
	if err != nil {
		return err
	}
	switch {
	case q.Handle == 0:
		return nil
	case q.Handle != QdiscHandle:
		return fmt.Errorf("%w (%s %x:)", ErrForeignQdisc, q.Kind, q.Handle>>16)
	case q.Kind != kind:
		return deleteRoot(conn, ifindex, q.Kind)
	}
	return nil
}

// linklayerEthernet is TC_LINKLAYER_ETHERNET: sizes are L2 frame sizes.
const linklayerEthernet = 1

var errNoRoot = errors.New("no root qdisc (is the interface gone?)")

func rootQdisc(_ *tc.Tc, ifindex int) (*tc.Object, error) {
	q, err := getQdisc(ifindex, tc.HandleRoot)
	if err == nil && q == nil {
		return nil, errNoRoot
	}
	return q, err
}

func deleteRoot(conn *tc.Tc, ifindex int, kind string) error {
	obj := rootObject(ifindex, kind)
	// go-tc marshals options even for a delete, which the kernel ignores;
	// give it empty ones for the kinds we install.
	switch kind {
	case "tbf":
		obj.Tbf = &tc.Tbf{Parms: &tc.TbfQopt{}}
	case "fq":
		obj.Fq = &tc.Fq{}
	}
	err := conn.Qdisc().Delete(obj)
	// A root that is still ours after an EINVAL is a real failure.
	if qdiscGone(err, func() bool {
		q, qerr := rootQdisc(conn, ifindex)
		return qerr == nil && (q == nil || q.Handle != QdiscHandle)
	}) {
		return nil
	}
	return fmt.Errorf("delete our root %s: %w", kind, err)
}

func rootObject(ifindex int, kind string) *tc.Object {
	return &tc.Object{
		Msg: tc.Msg{
			Family:  unix.AF_UNSPEC,
			Ifindex: uint32(ifindex),
			Handle:  QdiscHandle,
			Parent:  tc.HandleRoot,
		},
		Attribute: tc.Attribute{Kind: kind},
	}
}
