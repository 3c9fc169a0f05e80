// Package datapath loads kubeshaper's TC programs once, keeps their maps
// pinned in the bpffs, and turns typed rules into map entries keyed by
// {host interface, direction}. It does not attach anything (pkg/attach does)
// and knows nothing of Kubernetes.
package datapath

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Datapath is the loaded object: two programs (one per direction) shared by
// every interface, and the pinned maps they read and write.
type Datapath struct {
	objs   shaperObjects
	pinDir string
	clock  jiffyClock

	// Pinned maps only user space reads, opened on first use.
	names, first, inst, owner userMap

	opts Options

	slotMu  sync.Mutex
	atomics bool // the programs use BPF atomics, not the spin lock
}

// Open loads the programs and opens (or creates) the maps pinned under
// pinDir, which must be on a bpffs. Pinned maps keep rules, bucket state
// and counters across agent restarts; a pin whose layout no longer matches
// this build is replaced (its state is lost once).
func Open(pinDir string) (*Datapath, error) { return OpenWith(pinDir, Options{}) }

// OpenWith is Open with the maps sized by o (see Options). It also removes
// the pin directories of network namespaces that no longer exist
// (PruneStalePinDirs).
func OpenWith(pinDir string, o Options) (*Datapath, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for BPF maps: %w", err)
	}
	if err := ensurePinDir(pinDir); err != nil {
		return nil, err
	}
	d := &Datapath{pinDir: pinDir, opts: resolveSizes(pinDir, o)}
	d.keepLarger()
	d.PruneStalePinDirs()
	if err := d.load(); err != nil {
		return nil, err
	}
	return d, nil
}

// PruneStalePinDirs removes the pin directories of network namespaces
// that no longer exist, beside this one's (see the package function),
// and logs what it removed. The agent calls it at start and on resync.
func (d *Datapath) PruneStalePinDirs() {
	removed, err := PruneStalePinDirs(d.pinDir)
	for _, dir := range removed {
		d.logf("removed %s: the pinned maps of a network namespace that no longer exists", dir)
	}
	if err != nil {
		d.logf("%v", err)
	}
}

func (d *Datapath) load() error {
	d.atomics = haveAtomics()
	err := d.loadSpec()
	var ve *ebpf.VerifierError
	if d.atomics && errors.As(err, &ve) {
		// A kernel whose verifier takes the probe's atomics but not the
		// programs' (Debian's 5.10 does): the lock-based bucket instead.
		d.atomics = false
		err = d.loadSpec()
	}
	if errors.As(err, &ve) {
		return fmt.Errorf("the kernel's verifier rejected kubeshaper's programs: %+v", ve)
	}
	return err
}

func (d *Datapath) loadSpec() error {
	spec, err := loadShaper()
	if err != nil {
		return fmt.Errorf("reading kubeshaper's BPF object: %w", err)
	}
	d.sizeSpec(spec)
	if err := setFlowMask(spec, spec.Maps[shaperMapKsFlows].MaxEntries); err != nil {
		return err
	}
	if err := useKernelFeatures(spec, d.atomics); err != nil {
		return err
	}
	for _, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			if err := d.reconcilePin(m); err != nil {
				return err
			}
		}
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.pinDir}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return err
		}
		return fmt.Errorf("loading kubeshaper's BPF object (maps pinned in %s): %w", d.pinDir, err)
	}
	return nil
}

// Close releases this process's handles. Attached programs and pinned maps
// stay in the kernel.
func (d *Datapath) Close() error {
	for _, u := range []*userMap{&d.names, &d.first, &d.inst, &d.owner} {
		u.close()
	}
	return d.objs.Close()
}

// PinDir is where the maps are pinned.
func (d *Datapath) PinDir() string { return d.pinDir }

// Program returns the program to attach for a direction of the pod:
// pod egress runs at the host veth's tc ingress, pod ingress at its egress.
func (d *Datapath) Program(dir rules.Direction) *ebpf.Program {
	if dir == rules.Ingress {
		return d.objs.KsPodIngress
	}
	return d.objs.KsPodEgress
}

// RemovePins unpins every map under pinDir: the last step of a full
// cleanup, after every filter is detached.
func RemovePins(pinDir string) error { return removePins(pinDir) }

func removePins(pinDir string) error {
	// The ksp_* pins are pkg/sockpace's, kept beside these (removing its
	// link pin detaches the socket-pacing program).
	for _, name := range []string{shaperMapKsRules, shaperMapKsStats, shaperMapKsPcpu, shaperMapKsSlots, shaperMapKsSlotHash, slotOwnerMap, shaperMapKsFlows, shaperMapKsPeers, podNamesMap, firstAppliedMap, ifacesMap,
		"ksp_link", "ksp_rules", "ksp_groups", "ksp_stats", "ksp_node_netns", "ksp_socks"} {
		if err := os.Remove(pinDir + "/" + name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// The directory of tcx link pins (pkg/shaper), empty once every
	// interface is cleared.
	if err := os.Remove(pinDir + "/tcx"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("tcx links still pinned: %w", err)
	}
	return nil
}

// DefaultDuplicateMark is the skb->mark bit that tags a duplicate's clone
// at a tc ingress hook between bpf_clone_redirect() and its return to the
// program, which clears it (bpf/shaper.c, duplicate()).
const DefaultDuplicateMark = 0x00100000

// SetDuplicateMark changes that bit (the agent's --duplicate-mark), for
// programs this process loaded. Packets a pod sends arrive with mark 0 (a
// veth crossing network namespaces scrubs it), so the bit only has to be
// one no filter running before kubeshaper's at the host veth's tc ingress
// reads.
func (d *Datapath) SetDuplicateMark(mark uint32) error {
	if mark == 0 || mark&(mark-1) != 0 {
		return fmt.Errorf("duplicate mark %#x: want a single bit", mark)
	}
	return d.objs.KsDupMark.Set(mark)
}
