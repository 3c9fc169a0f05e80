package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// ifacesMap is a user-space-only pinned map: for each host ifindex with
// entries, which interface instance they were written for. Interface
// indexes are reused (a veth moved in from a pod's netns keeps its index
// when it is free, `ip link add … index N`, a node netns created anew), and
// a new interface must not inherit a deleted one's rule, bucket, counters
// and flows.
const ifacesMap = "ks_ifaces"

// instance is what tells two interfaces with one index apart: name and
// MAC address (a veth's is random unless its CNI sets one), and how many
// packets it has carried. An interface's packet counters only grow, so
// fewer packets than recorded means a new interface even when a CNI gives
// its re-created veth the same name and a fixed MAC (Calico's ee:ee:…).
type instance struct {
	Name    [16]byte
	MAC     [8]byte
	Packets uint64
}

func (a instance) sameAs(b instance) bool {
	return a.Name == b.Name && a.MAC == b.MAC && b.Packets >= a.Packets
}

func (d *Datapath) openInstances() (*ebpf.Map, error) {
	return d.inst.open(d, d.hashByIface(ifacesMap, 4, 32))
}

// liveInstance reads the interface with this index in the calling thread's
// netns (where the caller attaches); ok is false when there is none.
func liveInstance(ifindex int) (inst instance, ok bool) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return inst, false
	}
	a := l.Attrs()
	copy(inst.Name[:], a.Name)
	copy(inst.MAC[:], a.HardwareAddr)
	if s := a.Statistics; s != nil {
		inst.Packets = s.RxPackets + s.TxPackets
	}
	return inst, true
}

// claim makes ifindex's entries the live interface's: entries written for
// an earlier interface with the same index are deleted first (so counters
// start at zero, no old rule, bucket, peers or flows), and the live one is
// recorded. Called before anything is written for an interface.
func (d *Datapath) claim(ifindex int) error {
	live, ok := liveInstance(ifindex)
	if !ok {
		return nil // not an interface here (prog.Run tests use fake ones)
	}
	m, err := d.openInstances()
	if err != nil {
		return err
	}
	var rec instance
	err = m.Lookup(uint32(ifindex), &rec)
	switch {
	case err == nil && rec.sameAs(live):
	case err == nil || errors.Is(err, ebpf.ErrKeyNotExist):
		// Unknown or another instance: whatever the maps hold for this
		// index is an earlier interface's.
		stale := err == nil
		if err := d.wipe(ifindex); err != nil {
			return fmt.Errorf("clearing entries of an earlier interface with index %d: %w", ifindex, err)
		}
		if stale {
			d.logf("ifindex %d is a new interface (%s): the entries of the earlier one with this index were removed", ifindex, cstr(live.Name[:]))
		}
	default:
		return fmt.Errorf("reading the interface record of ifindex %d: %w", ifindex, err)
	}
	if err := m.Put(uint32(ifindex), live); err != nil {
		return fmt.Errorf("recording interface %d: %w", ifindex, err)
	}
	return nil
}

// wipe deletes every entry of ifindex (both directions).
func (d *Datapath) wipe(ifindex int) error {
	var errs []error
	for _, dir := range []Key{KeyOf(ifindex, 0), KeyOf(ifindex, 1)} {
		errs = append(errs, d.deleteKey(dir))
	}
	return errors.Join(errs...)
}

func (d *Datapath) forgetInstance(ifindex int) error {
	m, err := d.openInstances()
	if err != nil {
		return err
	}
	if err := m.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// userMap is a pinned map only user space uses (no program references
// it), opened on first use: a CLI run that never needs it never creates
// it. spec is called once, when the map is first wanted.
type userMap struct {
	once sync.Once
	m    *ebpf.Map
	err  error
}

// open returns the map, opening (or creating) it the first time.
func (u *userMap) open(d *Datapath, spec func() *ebpf.MapSpec) (*ebpf.Map, error) {
	u.once.Do(func() { u.m, u.err = d.openUserMap(spec()) })
	return u.m, u.err
}

func (u *userMap) close() {
	if u.m != nil {
		u.m.Close()
	}
}

// hashByIface is the spec of a user map with one entry per interface (or
// per rule set), sized like the datapath's own maps and allocated as used.
func (d *Datapath) hashByIface(name string, keySize, valueSize uint32) func() *ebpf.MapSpec {
	return func() *ebpf.MapSpec {
		return &ebpf.MapSpec{
			Name:       name,
			Type:       ebpf.Hash,
			KeySize:    keySize,
			ValueSize:  valueSize,
			MaxEntries: uint32(d.opts.Entries),
			Flags:      bpfFNoPrealloc,
			Pinning:    ebpf.PinByName,
		}
	}
}

// openUserMap opens (or creates) a user-space-only pinned map, recreating
// it when the pin's layout differs and migrating it when only its size
// does (see migrate).
func (d *Datapath) openUserMap(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	if err := d.reconcilePin(spec); err != nil {
		return nil, err
	}
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: d.pinDir})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		os.Remove(filepath.Join(d.pinDir, spec.Name))
		m, err = ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: d.pinDir})
	}
	if err != nil {
		return nil, fmt.Errorf("opening the pinned map %s: %w", spec.Name, err)
	}
	return m, nil
}
