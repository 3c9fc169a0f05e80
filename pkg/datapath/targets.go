package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/kubeshaper/kubeshaper/pkg/rules"
)

// Limits of the compiled targets: KS_MAX_TARGETS and KS_MAX_RANGES of
// bpf/shaper.h, read from the generated struct so that they cannot drift.
const (
	maxTargets = len(shaperKsTargets{}.Flags)
	maxRanges  = len(shaperKsTargets{}.Ranges)
)

// Target is one of a rule's targets as the datapath matches it: the
// rules it limits and the packets it takes. Its peers are not here but in
// ks_peers (PeersFor, SetPeers): Peers only says that it has some.
type Target struct {
	gates flag // the rules (flags) limited to this target
	// Proto is the protocol the target takes (rules.ProtoAny: every one).
	Proto rules.Proto
	// Peers is set when the target takes only some peers (to=, a Service).
	Peers bool
	// Ports are the port ranges it takes (none: every port).
	Ports []rules.PortRange
}

// setTargets lists the direction's targets, in the order of p.Targets(),
// with the rules each gates (its kinds' gates, as far as c sets them).
func (c *Config) setTargets(p rules.DirectionPolicy) error {
	targets := p.Targets()
	if len(targets) == 0 {
		return nil
	}
	if len(targets) > maxTargets {
		return fmt.Errorf("%d different targets in one direction: the datapath holds %d", len(targets), maxTargets)
	}
	c.Targets = make([]Target, len(targets))
	for i, t := range targets {
		c.Targets[i] = Target{Proto: t.Proto, Peers: t.HasPeers(), Ports: t.Ports()}
	}
	for _, k := range rules.Kinds() {
		if k.Rule(p) == nil {
			continue
		}
		if i := slices.Index(targets, k.Target(p)); i >= 0 {
			m, err := kindMapOf(k)
			if err != nil {
				return err
			}
			c.Targets[i].gates |= m.gates & c.flags
		}
	}
	return nil
}

// Targeted reports whether some of the config's rules apply to targets
// only.
func (c Config) Targeted() bool { return len(c.Targets) > 0 }

// PeerEntry is one prefix of ks_peers for a key: the targets (bit i =
// target i) whose peers contain it.
type PeerEntry struct {
	Prefix  netip.Prefix
	Targets uint32
}

// ServicePeers resolves a Service to the addresses that stand for it: its
// endpoints' and its cluster IPs.
type ServicePeers func(rules.ServiceRef) []netip.Prefix

// PeersFor lists the ks_peers entries of a direction's targets, in the
// target order of Config (p.Targets()). Every entry holds the targets of
// all prefixes containing it, so the longest match answers for every
// target. svc resolves Services (nil: none resolve, so a Service-only
// target matches no peer).
func PeersFor(p rules.DirectionPolicy, svc ServicePeers) []PeerEntry {
	masks := map[netip.Prefix]uint32{}
	for i, t := range p.Targets() {
		peers := t.Peers()
		if t.Service.Name != "" && svc != nil {
			peers = append(peers, svc(t.Service)...)
		}
		for _, pr := range peers {
			masks[pr.Masked()] |= 1 << i
		}
	}
	out := make([]PeerEntry, 0, len(masks))
	for pr := range masks {
		var m uint32
		for q, qm := range masks {
			if q.Addr().Is4() == pr.Addr().Is4() && q.Bits() <= pr.Bits() && q.Contains(pr.Addr()) {
				m |= qm
			}
		}
		out = append(out, PeerEntry{Prefix: pr, Targets: m})
	}
	slices.SortFunc(out, func(a, b PeerEntry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// peerMapKey is the key of ks_peers (struct ks_peer_key): the datapath's own;
// callers see PeerEntry.
type peerMapKey = shaperKsPeerKey

func peerKey(key Key, pr netip.Prefix) peerMapKey {
	k := peerMapKey{Ifindex: key.Ifindex, Dir: uint8(key.Dir), Prefixlen: 64 + uint32(pr.Bits())}
	a := pr.Addr()
	if a.Is4() {
		k.Family = 4
		b := a.As4()
		copy(k.Addr[:], b[:])
	} else {
		k.Family = 6
		b := a.As16()
		copy(k.Addr[:], b[:])
	}
	return k
}

// peerKeysOf lists the ks_peers keys of key (every key when all is set).
func (d *Datapath) peerKeysOf(key Key, all bool) ([]peerMapKey, error) {
	var out []peerMapKey
	var cur any
	for {
		var next peerMapKey
		err := d.objs.KsPeers.NextKey(cur, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing ks_peers: %w", err)
		}
		if all || (next.Ifindex == key.Ifindex && uint32(next.Dir) == key.Dir) {
			out = append(out, next)
		}
		cur = next
	}
}

// SetPeers makes key's entries of ks_peers exactly entries. Call it
// before Set with the config the entries belong to, so that a new target
// finds its peers in place; stale prefixes are removed last.
func (d *Datapath) SetPeers(key Key, entries []PeerEntry) error {
	if err := d.claim(int(key.Ifindex)); err != nil {
		return err
	}
	return d.setPeers(key, entries)
}

func (d *Datapath) setPeers(key Key, entries []PeerEntry) error {
	want := make(map[peerMapKey]uint32, len(entries))
	for _, e := range entries {
		want[peerKey(key, e.Prefix)] = e.Targets
	}
	have, err := d.peerKeysOf(key, false)
	if err != nil {
		return err
	}
	for k, v := range want {
		if err := d.objs.KsPeers.Put(k, v); err != nil {
			return fmt.Errorf("writing peers of %s: %w", keyString(key), err)
		}
	}
	for _, k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := d.objs.KsPeers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("deleting a peer of %s: %w", keyString(key), err)
		}
	}
	return nil
}

// Peers lists key's entries of ks_peers.
func (d *Datapath) Peers(key Key) ([]PeerEntry, error) {
	keys, err := d.peerKeysOf(key, false)
	if err != nil {
		return nil, err
	}
	var out []PeerEntry
	for _, k := range keys {
		var v uint32
		if err := d.objs.KsPeers.Lookup(k, &v); err != nil {
			continue
		}
		out = append(out, PeerEntry{Prefix: k.Prefix(), Targets: v})
	}
	return out, nil
}

// Prefix is the key's prefix.
func (k peerMapKey) Prefix() netip.Prefix {
	bits := int(k.Prefixlen) - 64
	if k.Family == 4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), bits)
	}
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), bits)
}
