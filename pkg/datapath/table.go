package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Key names one {host interface, direction}: the programs find its
// entries through the interface's slot (slots.go), so no map is keyed by
// it directly.
type Key struct {
	Ifindex uint32
	Dir     uint32 // a rules.Direction
}

// KeyOf builds a Key.
func KeyOf(ifindex int, dir rules.Direction) Key {
	return Key{Ifindex: uint32(ifindex), Dir: uint32(dir)}
}

// Direction of a key.
func (k Key) Direction() rules.Direction { return rules.Direction(k.Dir) }

// Set installs cfg for key. Counters are kept; the bucket's state is
// carried over from the rule being replaced (read and written under the
// entry's spin lock), so a rule change neither resets counters nor refills
// the bucket. A new bucket starts nearly empty (one GSO skb of credit): a
// full one would let burst bytes through at line rate the moment a rule is
// applied. An interface's first Set gives it a slot (zeroed counters).
func (d *Datapath) Set(key Key, cfg Config) error {
	r, err := cfg.value()
	if err != nil {
		return fmt.Errorf("%s: %w", keyString(key), err)
	}
	if err := d.claim(int(key.Ifindex)); err != nil {
		return err
	}
	slot, err := d.slotFor(key.Ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", keyString(key), err)
	}
	i := index(slot, key.Dir)
	var cur rule
	if err := d.objs.KsRules.LookupWithFlags(i, &cur, ebpf.LookupLock); err != nil {
		return fmt.Errorf("reading rule for %s: %w", keyString(key), err)
	}
	if cur.Flags&flagSet != 0 {
		r.TokensQ32, r.LastNs, r.T_next = cur.TokensQ32, cur.LastNs, cur.T_next
		r.GeBad = cur.GeBad
	} else {
		r.TokensQ32, r.LastNs, r.T_next = int64(r.Debt)<<32, bucketNow(), 0
	}
	r.Flags |= flagSet
	r.Ifindex = key.Ifindex
	if err := d.objs.KsRules.Update(i, r, ebpf.UpdateLock); err != nil {
		return fmt.Errorf("writing rule for %s: %w", keyString(key), err)
	}
	return nil
}

const flagSet = uint32(fSet)

// Delete removes one direction's rule, counters and peers; the other
// direction and what belongs to the interface as a whole (flows, pod name,
// the instance record) stay. Missing entries are not an error.
func (d *Datapath) Delete(key Key) error { return d.deleteKey(key) }

// DeleteInterface removes everything kept for an interface: both
// directions (Delete), its flows, its pod name and the record of which
// interface instance the entries belonged to.
func (d *Datapath) DeleteInterface(ifindex int) error {
	var errs []error
	for _, dir := range rules.Directions {
		errs = append(errs, d.deleteKey(KeyOf(ifindex, dir)))
	}
	errs = append(errs, d.ForgetFlows(ifindex), d.forgetPodName(ifindex), d.forgetInstance(ifindex))
	return errors.Join(errs...)
}

func (d *Datapath) deleteKey(key Key) error {
	var errs []error
	slot, ok, err := d.slotOf(key.Ifindex)
	if err != nil {
		return err
	}
	if ok {
		// Rule first: from then on the program leaves the direction alone.
		// Then its counters (a packet already past the rule lookup may
		// still add itself: a new interface's slot is zeroed again when
		// it is given out).
		i := index(slot, key.Dir)
		if err := d.objs.KsRules.Update(i, rule{}, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("deleting the rule of %s: %w", keyString(key), err))
		}
		if err := d.zeroCounters(i); err != nil {
			errs = append(errs, fmt.Errorf("deleting the counters of %s: %w", keyString(key), err))
		}
		// The interface's last direction gone: its slot too.
		var other rule
		if err := d.objs.KsRules.Lookup(index(slot, 1-key.Dir), &other); err == nil && other.Flags&flagSet == 0 {
			errs = append(errs, d.freeSlot(key.Ifindex))
		}
	}
	if err := d.setPeers(key, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Lookup returns the config installed for key.
func (d *Datapath) Lookup(key Key) (Config, bool, error) {
	i, ok, err := d.indexOf(key)
	if err != nil || !ok {
		return Config{}, false, err
	}
	var r rule
	if err := d.objs.KsRules.LookupWithFlags(i, &r, ebpf.LookupLock); err != nil {
		return Config{}, false, fmt.Errorf("reading config for %s: %w", keyString(key), err)
	}
	if r.Flags&flagSet == 0 {
		return Config{}, false, nil
	}
	return configOf(r), true, nil
}

// Keys lists both directions of every interface with a slot, and keys
// with peers only, so that leftovers of a crash are found too.
func (d *Datapath) Keys() ([]Key, error) {
	seen := map[Key]bool{}
	var out []Key
	owners, err := d.owners()
	if err != nil {
		return nil, err
	}
	for _, ifindex := range owners {
		for dir := uint32(0); dir < 2; dir++ {
			k := Key{Ifindex: ifindex, Dir: dir}
			seen[k] = true
			out = append(out, k)
		}
	}
	// Peers of targeted rules, which a crash may have left without one.
	peers, err := d.peerKeysOf(Key{}, true)
	if err != nil {
		return nil, err
	}
	for _, pk := range peers {
		k := Key{Ifindex: pk.Ifindex, Dir: uint32(pk.Dir)}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

func keyString(k Key) string {
	return fmt.Sprintf("ifindex %d %s", k.Ifindex, k.Direction())
}
