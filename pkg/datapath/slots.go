package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// slotOwnerMap is a user-space-only pinned array: which host ifindex owns
// each slot (0: free). The programs find a slot through ks_slots (indexed
// by ifindex) or ks_slot_hash; this is the reverse, for allocation and
// listing (bpf/lib/slots.h has the layout).
const slotOwnerMap = "ks_slot_owner"

// ErrFull is returned when every slot is taken: the node runs more pods
// than the maps were sized for (--max-pods, the Node's allocatable pods).
var ErrFull = errors.New("kubeshaper's maps are full")

func (d *Datapath) slots() int { return int(d.objs.KsRules.MaxEntries()) / 2 }

func (d *Datapath) openSlotOwner() (*ebpf.Map, error) {
	return d.owner.open(d, func() *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: slotOwnerMap, Type: ebpf.Array, KeySize: 4, ValueSize: 4,
			MaxEntries: uint32(d.slots()), Pinning: ebpf.PinByName}
	})
}

// slotOf is the slot of ifindex; ok is false when it has none.
func (d *Datapath) slotOf(ifindex uint32) (slot uint32, ok bool, err error) {
	var v uint32
	if ifindex < d.objs.KsSlots.MaxEntries() {
		err = d.objs.KsSlots.Lookup(ifindex, &v)
	} else {
		err = d.objs.KsSlotHash.Lookup(ifindex, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the slot of ifindex %d: %w", ifindex, err)
	}
	if v == 0 {
		return 0, false, nil
	}
	return v - 1, true, nil
}

// index is key's index in the slot-indexed arrays.
func index(slot uint32, dir uint32) uint32 { return slot*2 + dir }

// indexOf is key's index; ok is false when its interface has no slot.
func (d *Datapath) indexOf(key Key) (uint32, bool, error) {
	s, ok, err := d.slotOf(key.Ifindex)
	return index(s, key.Dir), ok, err
}

// slotFor returns ifindex's slot, giving it a free one (zeroed: no rule,
// counters at zero) if it has none.
func (d *Datapath) slotFor(ifindex uint32) (uint32, error) {
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	if s, ok, err := d.slotOf(ifindex); err != nil || ok {
		return s, err
	}
	owner, err := d.openSlotOwner()
	if err != nil {
		return 0, err
	}
	n := uint32(d.slots())
	var free uint32 = n
	for s := uint32(0); s < n; s++ {
		var o uint32
		if err := owner.Lookup(s, &o); err != nil {
			return 0, fmt.Errorf("reading slot %d: %w", s, err)
		}
		if o == 0 {
			free = s
			break
		}
	}
	if free == n {
		return 0, fmt.Errorf("%w: all %d interface slots are taken (size the maps for more pods: --max-pods)", ErrFull, n)
	}
	// Zero it now, not when it was freed: a packet in flight then may
	// still have written to it.
	for dir := uint32(0); dir < 2; dir++ {
		i := index(free, dir)
		if err := d.objs.KsRules.Update(i, rule{}, ebpf.UpdateAny); err != nil {
			return 0, fmt.Errorf("clearing slot %d: %w", free, err)
		}
		if err := d.zeroCounters(i); err != nil {
			return 0, fmt.Errorf("clearing slot %d: %w", free, err)
		}
	}
	if err := owner.Update(free, ifindex, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("taking slot %d: %w", free, err)
	}
	if err := d.publish(ifindex, free+1); err != nil {
		owner.Update(free, uint32(0), ebpf.UpdateAny)
		return 0, err
	}
	return free, nil
}

// publish points the programs' lookup of ifindex at slot v-1 (v 0: none).
func (d *Datapath) publish(ifindex, v uint32) error {
	var err error
	switch {
	case ifindex < d.objs.KsSlots.MaxEntries():
		err = d.objs.KsSlots.Update(ifindex, v, ebpf.UpdateAny)
	case v == 0:
		err = d.objs.KsSlotHash.Delete(ifindex)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
	default:
		err = d.objs.KsSlotHash.Update(ifindex, v, ebpf.UpdateAny)
		if errors.Is(err, ebpf.ErrKeyNotExist) || isE2BIG(err) {
			err = fmt.Errorf("%w: %v", ErrFull, err)
		}
	}
	if err != nil {
		return fmt.Errorf("recording the slot of ifindex %d: %w", ifindex, err)
	}
	return nil
}

// freeSlot gives ifindex's slot back: the programs stop finding it first.
func (d *Datapath) freeSlot(ifindex uint32) error {
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	s, ok, err := d.slotOf(ifindex)
	if err != nil || !ok {
		return err
	}
	if err := d.publish(ifindex, 0); err != nil {
		return err
	}
	owner, err := d.openSlotOwner()
	if err != nil {
		return err
	}
	if err := owner.Update(s, uint32(0), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("freeing slot %d: %w", s, err)
	}
	return nil
}

// owners lists every interface that has a slot.
func (d *Datapath) owners() ([]uint32, error) {
	owner, err := d.openSlotOwner()
	if err != nil {
		return nil, err
	}
	var out []uint32
	var s, o uint32
	it := owner.Iterate()
	for it.Next(&s, &o) {
		if o != 0 {
			out = append(out, o)
		}
	}
	return out, it.Err()
}

// zeroCounters clears the counters at index i.
func (d *Datapath) zeroCounters(i uint32) error {
	if err := d.objs.KsStats.Update(i, shaperKsCounters{}, ebpf.UpdateAny); err != nil {
		return err
	}
	return d.objs.KsPcpu.Update(i, make([]pcpuCounters, ebpf.MustPossibleCPU()), ebpf.UpdateAny)
}
