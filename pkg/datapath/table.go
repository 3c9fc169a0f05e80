package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Key names one {host interface, direction} in every map.
type Key = shaperKsKey

// KeyOf builds a map key.
func KeyOf(ifindex int, dir rules.Direction) Key {
	return Key{Ifindex: uint32(ifindex), Dir: uint32(dir)}
}

// Direction of a key.
func (k Key) Direction() rules.Direction { return rules.Direction(k.Dir) }

// Set installs cfg for key. Counters are created if absent and kept if
// present; the bucket's state is carried over from the entry being
// replaced (read and written under the entry's spin lock), so a rule change
// neither resets counters nor refills the bucket. A new bucket starts
// nearly empty (one GSO skb of credit): a full one would let burst bytes
// through at line rate the moment a rule is applied.
func (d *Datapath) Set(key Key, cfg Config) error {
	if err := d.claim(int(key.Ifindex)); err != nil {
		return err
	}
	zero := make([]Counters, ebpf.MustPossibleCPU())
	if err := d.objs.KsStats.Update(key, zero, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("creating counters for %s: %w", keyString(key), err)
	}
	var cur Config
	err := d.objs.KsRules.LookupWithFlags(key, &cur, ebpf.LookupLock)
	switch {
	case err == nil:
		cfg.TokensQ32, cfg.LastNs, cfg.T_next = cur.TokensQ32, cur.LastNs, cur.T_next
		cfg.GeBad = cur.GeBad
	case errors.Is(err, ebpf.ErrKeyNotExist):
		cfg.TokensQ32, cfg.LastNs, cfg.T_next = int64(cfg.Debt)<<32, monotonicNow(), 0
	default:
		return fmt.Errorf("reading rule for %s: %w", keyString(key), err)
	}
	if err := d.objs.KsRules.Update(key, cfg, ebpf.UpdateLock); err != nil {
		return fmt.Errorf("writing rule for %s: %w", keyString(key), err)
	}
	return nil
}

// Delete removes every entry of key. Missing entries are not an error.
func (d *Datapath) Delete(key Key) error {
	err := d.deleteKey(key)
	if key.Direction() == rules.Ingress {
		err = errors.Join(err, d.forgetInstance(int(key.Ifindex)))
	}
	return err
}

func (d *Datapath) deleteKey(key Key) error {
	// Rule first: from then on the program leaves the interface alone.
	var errs []error
	for _, m := range d.maps() {
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("deleting %s from %s: %w", keyString(key), m.String(), err))
		}
	}
	if err := d.setPeers(key, nil); err != nil {
		errs = append(errs, err)
	}
	if key.Direction() == rules.Ingress { // once per interface: its last direction
		errs = append(errs, d.ForgetFlows(int(key.Ifindex)), d.forgetPodName(int(key.Ifindex)))
	}
	return errors.Join(errs...)
}

func (d *Datapath) maps() []*ebpf.Map { return []*ebpf.Map{d.objs.KsRules, d.objs.KsStats} }

// Lookup returns the config installed for key.
func (d *Datapath) Lookup(key Key) (Config, bool, error) {
	var c Config
	err := d.objs.KsRules.LookupWithFlags(key, &c, ebpf.LookupLock)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("reading config for %s: %w", keyString(key), err)
	}
	return c, true, nil
}

// Keys lists every key with an entry in any of the maps (rules or
// counters), so that leftovers of a crash are found too.
func (d *Datapath) Keys() ([]Key, error) {
	seen := map[Key]bool{}
	var out []Key
	for _, m := range d.maps() {
		// NextKey, not Iterate: only keys are needed, and per-CPU values
		// would be copied for nothing.
		var cur any // untyped nil asks for the first key
		for {
			var next Key
			err := m.NextKey(cur, &next)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", m.String(), err)
			}
			if !seen[next] {
				seen[next] = true
				out = append(out, next)
			}
			cur = next
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
