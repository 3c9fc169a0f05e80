/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-flow records: a set-associative table in an ARRAY map.
 *
 * Why not an LRU hash: its lookup is two kernel calls (the hash walk and a
 * memcmp of the 44-byte key) with the key hashed by jhash, 33-42 ns a
 * packet here, where an array lookup is inlined by the verifier: a bounds
 * check and an address. Here the set is a multiplicative hash of the key
 * computed in the program, and a packet of a known flow costs that hash,
 * one inlined lookup, compares of the set's keys (IPv4: five words each)
 * and the atomic adds (docs/bench/prog.txt: MonitorFlows vs Monitor).
 *
 * Counting needs no lock: packets, bytes and drops are atomic adds (exact
 * across CPUs), last_jiffies and the flag bits plain stores (a lost race
 * costs a tick of age or a flag seen again on the next packet; atomic OR
 * needs 5.12). Claiming a way for a new flow takes the set's spin lock,
 * so two CPUs that miss the same new flow at once make one record, not
 * two: the second finds the first's under the lock. A full set evicts its
 * least recently seen way (an LRU per set of KS_FLOW_WAYS, where the LRU
 * hash's is approximate across the map). A way is invalidated (family 0)
 * before its key is rewritten and marked valid after: a lock-free reader
 * racing with the eviction of its own flow can match the old key once and
 * count into the new record, as an LRU hash's reused element can.
 *
 * User space removes a record only through ks_flow_forget (under the same
 * lock, checking the key), never by writing a whole set, which would undo
 * the adds of the set's other flows made since it was read.
 *
 * Needs nothing newer than 5.10: atomic adds, bpf_spin_lock in an array
 * value, bounded loops.
 */
#ifndef KUBESHAPER_LIB_FLOWS_H
#define KUBESHAPER_LIB_FLOWS_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../shaper.h"
#include "parse.h"

/* Sized by user space: FlowEntries / KS_FLOW_WAYS sets, a power of two. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2048);
	__type(key, __u32);
	__type(value, struct ks_flow_set);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_flows SEC(".maps");

/* The map's sets - 1, set by user space at load time (pkg/datapath
 * mirrors flow_set in flowhash.go, to re-home records when it resizes). */
volatile const __u32 ks_flow_sets_mask = 2047;

/* The key as 11 words: 0 ifindex, 1 dir/proto/family, 2 ports, 3-6 the
 * source address, 7-10 the destination (IPv4: 3 and 7, the rest zero). */
#define KS_FK_W(k, i) (((const __u32 *)(k))[i])

static __always_inline __u32 flow_set(const struct ks_flow_key *k)
{
	__u64 h = (__u64)KS_FK_W(k, 0) * 0x9E3779B97F4A7C15ULL;

	h ^= (__u64)KS_FK_W(k, 1) * 0xC2B2AE3D27D4EB4FULL;
	h ^= (__u64)KS_FK_W(k, 2) * 0x165667B19E3779F9ULL;
	h ^= (__u64)KS_FK_W(k, 3) * 0x85EBCA77C2B2AE63ULL;
	h ^= (__u64)KS_FK_W(k, 7) * 0x27D4EB2F165667C5ULL;
	if (k->family == 6) {
		h ^= (__u64)(KS_FK_W(k, 4) ^ KS_FK_W(k, 8)) * 0x94D049BB133111EBULL;
		h ^= (__u64)(KS_FK_W(k, 5) ^ KS_FK_W(k, 9)) * 0xBF58476D1CE4E5B9ULL;
		h ^= (__u64)(KS_FK_W(k, 6) ^ KS_FK_W(k, 10)) * 0xFF51AFD7ED558CCDULL;
	}
	return ((__u32)(h >> 32) ^ (__u32)h) & ks_flow_sets_mask;
}

/* Keys are written whole from a zeroed struct ks_pkt, so an IPv4 key's
 * words 4-6 and 8-10 are zero on both sides. */
static __always_inline bool flow_key_eq(const struct ks_flow_key *a,
					const struct ks_flow_key *b)
{
	if (KS_FK_W(a, 0) != KS_FK_W(b, 0) || KS_FK_W(a, 2) != KS_FK_W(b, 2) ||
	    KS_FK_W(a, 1) != KS_FK_W(b, 1) || KS_FK_W(a, 3) != KS_FK_W(b, 3) ||
	    KS_FK_W(a, 7) != KS_FK_W(b, 7))
		return false;
	if (b->family != 6)
		return true;
	return KS_FK_W(a, 4) == KS_FK_W(b, 4) && KS_FK_W(a, 5) == KS_FK_W(b, 5) &&
	       KS_FK_W(a, 6) == KS_FK_W(b, 6) && KS_FK_W(a, 8) == KS_FK_W(b, 8) &&
	       KS_FK_W(a, 9) == KS_FK_W(b, 9) && KS_FK_W(a, 10) == KS_FK_W(b, 10);
}

static __always_inline void flow_count(struct ks_flow *f, const struct ks_pkt *p,
				       __u64 jiffies, __u32 segs, __u64 wire,
				       int dropped)
{
	__sync_fetch_and_add(&f->packets, segs);
	__sync_fetch_and_add(&f->bytes, wire);
	if (dropped)
		__sync_fetch_and_add(&f->drops, segs);
	f->last_jiffies = jiffies;
	if ((f->tcp_flags | p->tcp_flags) != f->tcp_flags)
		f->tcp_flags |= p->tcp_flags;
}

/* Under s->lock: the way holding p's flow, a new one claimed for it. */
static __always_inline __u32 flow_claim(struct ks_flow_set *s,
					const struct ks_pkt *p, __u64 jiffies)
{
	struct ks_flow_way *w;
	__u64 oldest = ~0ULL;
	__u32 i, victim = 0;

	/* Another CPU may have claimed it since our lock-free look. */
#pragma unroll
	for (i = 0; i < KS_FLOW_WAYS; i++)
		if (flow_key_eq(&s->ways[i].key, &p->fk))
			return i;
#pragma unroll
	for (i = 0; i < KS_FLOW_WAYS; i++) {
		w = &s->ways[i];
		if (!w->key.family) {
			victim = i;
			break;
		}
		if (w->stats.last_jiffies < oldest) {
			oldest = w->stats.last_jiffies;
			victim = i;
		}
	}
	w = &s->ways[victim & (KS_FLOW_WAYS - 1)];
	w->key.family = 0; /* invalid while rewritten (lock-free readers) */
	w->stats.packets = 0;
	w->stats.bytes = 0;
	w->stats.drops = 0;
	w->stats.tcp_flags = 0;
	w->stats.first_jiffies = jiffies;
	w->stats.last_jiffies = jiffies;
	w->key.ifindex = p->fk.ifindex;
	w->key.dir = p->fk.dir;
	w->key.proto = p->fk.proto;
	w->key.sport = p->fk.sport;
	w->key.dport = p->fk.dport;
	__builtin_memcpy(w->key.saddr, p->fk.saddr, 16);
	__builtin_memcpy(w->key.daddr, p->fk.daddr, 16);
	w->key.family = p->fk.family;
	return victim;
}

/* Records the packet in its flow (p->fk complete: ifindex and dir set). */
static __always_inline void flow_seen(const struct ks_pkt *p, __u64 jiffies,
				      __u32 segs, __u64 wire, int dropped)
{
	__u32 set = flow_set(&p->fk), i;
	struct ks_flow_set *s = bpf_map_lookup_elem(&ks_flows, &set);

	if (!s)
		return;
#pragma unroll
	for (i = 0; i < KS_FLOW_WAYS; i++) {
		if (flow_key_eq(&s->ways[i].key, &p->fk)) {
			flow_count(&s->ways[i].stats, p, jiffies, segs, wire, dropped);
			return;
		}
	}
	bpf_spin_lock(&s->lock);
	i = flow_claim(s, p, jiffies);
	bpf_spin_unlock(&s->lock);
	flow_count(&s->ways[i & (KS_FLOW_WAYS - 1)].stats, p, jiffies, segs, wire,
		   dropped);
}

/*
 * Removes the record at req's set and way if it still holds req's key
 * (user space, through BPF_PROG_TEST_RUN: the export path's expiry and a
 * pod's cleanup). Returns 1 if removed, 0 if the way holds another flow
 * by now, 2 on a malformed request.
 */
static __always_inline int flow_forget(struct __sk_buff *skb)
{
	struct ks_flow_forget_req req;
	struct ks_flow_set *s;
	struct ks_flow_way *w;
	int removed = 0;

	if (bpf_skb_load_bytes(skb, 0, &req, sizeof(req)))
		return 2;
	s = bpf_map_lookup_elem(&ks_flows, &req.set);
	if (!s || req.way >= KS_FLOW_WAYS || !req.key.family)
		return 2;
	w = &s->ways[req.way & (KS_FLOW_WAYS - 1)];
	bpf_spin_lock(&s->lock);
	if (flow_key_eq(&w->key, &req.key)) {
		w->key.family = 0;
		removed = 1;
	}
	bpf_spin_unlock(&s->lock);
	return removed;
}

#endif
