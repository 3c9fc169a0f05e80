/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where an {interface, direction}'s rule and counters live: slot-indexed
 * arrays, found with one array lookup per packet.
 *
 * User space gives each host interface a slot (pkg/datapath, slots.go) and
 * records it in ks_slots[ifindex] (slot + 1; 0: none) when the index is
 * below KS_DIRECT_IFINDEX, else in the ks_slot_hash fallback. The rule of
 * direction dir is ks_rules[2 * slot + dir], its counters ks_pcpu[…] (per
 * CPU: packets and bytes, written on every packet) and ks_stats[…] (shared,
 * atomic: drops and rarer events). The verifier inlines array lookups
 * (a bounds check and an address), where a hash lookup hashes the key
 * and walks a bucket: ~20 ns each on this machine, three per packet
 * before. A slot is zeroed by user space when it is given out, never
 * when it is freed, so a late write from a packet in flight cannot reach
 * the next interface's counters.
 *
 * The sizes here are placeholders: user space sizes every map but
 * ks_slots for the node at load time.
 */
#ifndef KUBESHAPER_LIB_SLOTS_H
#define KUBESHAPER_LIB_SLOTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../shaper.h"

/* 256 KB: interface indexes of a node's veths start low and grow by one or
 * two per pod created; beyond this, the hash fallback (one hash lookup). */
#define KS_DIRECT_IFINDEX 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KS_DIRECT_IFINDEX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_slot_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct ks_pcpu_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct ks_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_stats SEC(".maps");

/* The fallback, out of line: were both lookups in one function, the
 * compiler would merge them into one call with the map chosen at run time,
 * which the verifier cannot inline (a real, retpolined, helper call).
 * custom.c keeps it inline: its wrapper must end with the custom program
 * (KS_SLOTS_ONE_FUNCTION), and it looks slots up on drops only. */
#ifdef KS_SLOTS_ONE_FUNCTION
#define KS_SLOT_HASHED_ATTR __always_inline
#else
#define KS_SLOT_HASHED_ATTR __attribute__((noinline))
#endif
static KS_SLOT_HASHED_ATTR __u32 ks_slot_hashed(__u32 ifindex)
{
	__u32 *s = bpf_map_lookup_elem(&ks_slot_hash, &ifindex);

	return s ? *s : 0;
}

/* The index of {ifindex, dir} in the slot-indexed arrays; -1: none. */
static __always_inline __s64 ks_index_of(__u32 ifindex, __u32 dir)
{
	__u32 v = 0;

	if (ifindex < KS_DIRECT_IFINDEX) {
		__u32 *s = bpf_map_lookup_elem(&ks_slots, &ifindex);

		if (s)
			v = *s;
	} else {
		v = ks_slot_hashed(ifindex);
	}
	if (!v)
		return -1;
	return (__s64)(v - 1) * 2 + dir;
}

/* Counts a drop under its reason (shared counters, atomic). */
static __always_inline void ks_count_drop(struct ks_counters *c, __u32 reason,
					  __u64 wire, __u32 segs)
{
	if (c && reason < KS_REASON_MAX) {
		__sync_fetch_and_add(&c->drop_packets[reason], segs);
		__sync_fetch_and_add(&c->drop_bytes[reason], wire);
	}
}

#endif
