// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kubeshaper's TC programs. One object is loaded once per node and the same
 * program is attached to every pod's host-side veth; what it does on each
 * {interface, direction} comes from ks_rules, written by the agent. A rule
 * change is a map update, never a reload.
 *
 * Only struct __sk_buff (stable UAPI, rewritten by the verifier) is read, so
 * the object needs no CO-RE relocations and loads on 5.10 … 7.x as is.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "shaper.h"
#include "lib/parse.h"
#include "lib/slots.h"
#include "lib/flows.h"

#define NSEC_PER_SEC 1000000000ULL
/* Buckets that fill faster than this read the exact clock (bucket_now). */
#define KS_COARSE_MIN_FILL_NS (50 * 1000000ULL)

/* Rules and datapath state, at ks_rules[2 * slot + dir] (lib/slots.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct ks_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_rules SEC(".maps");

/* The peer prefixes of targeted rules (see struct ks_peer_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__type(key, struct ks_peer_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_peers SEC(".maps");

/* Set while this CPU runs a duplicate's clone through a tc egress hook
 * (see duplicate()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ks_dup_guard SEC(".maps");

/*
 * The skb->mark bit that tags a duplicate's clone at a tc ingress hook
 * (see duplicate()); the agent may change it (--duplicate-mark).
 */
__u32 ks_dup_mark = 0x00100000;

/*
 * The host veth a pod-side program instance works for. Pod eth0 ifindexes
 * repeat across pods, so the key cannot come from the skb there; user space
 * loads one instance per pod and direction handled pod-side (EDT on pod
 * egress, or a host side that is bypassed: peer redirect, a foreign
 * program), with this set.
 */
volatile const __u32 ks_host_ifindex = 0;

/*
 * 1 when the kernel has bpf_ktime_get_coarse_ns (5.11+): set by user space
 * at load time (a feature probe). The verifier never walks the branch a
 * frozen constant rules out, so the older kernels' programs load with the
 * helper call in them. See bucket_now().
 */
volatile const __u32 ks_coarse_clock = 0;

/* Force BTF emission of types only user space uses. */
const enum ks_reason ks_reason_unused __attribute__((unused));
const enum ks_flags ks_flags_unused __attribute__((unused));
const struct ks_key ks_key_unused __attribute__((unused));
const struct ks_flow_forget_req ks_flow_forget_req_unused __attribute__((unused));

static __always_inline int drop(struct ks_counters *c, __u32 reason,
				__u64 wire, __u32 segs)
{
	ks_count_drop(c, reason, wire, segs);
	return TC_ACT_SHOT;
}

/*
 * The token bucket's clock: CLOCK_MONOTONIC_COARSE where the kernel has
 * it (bpf_ktime_get_coarse_ns, ~5 ns a read), else CLOCK_MONOTONIC
 * (bpf_ktime_get_ns, ~35 ns a read in a VM here). Both count the same
 * nanoseconds; the coarse one only advances once a tick (1/HZ: 4 ms at
 * Debian's HZ=250), and why that cannot change the rate a bucket lets
 * through in the long run:
 *  - the coarse clock c(t) is non-decreasing and t - d < c(t) <= t, d one
 *    tick;
 *  - the bucket credits (c_k - c_{k-1}) x rate at packet k; over packets
 *    1..N the credits telescope to (c_N - c_0) x rate, which differs from
 *    the exact clock's (t_N - t_0) x rate by less than d x rate in total,
 *    however long the run: the error is one tick's worth of bytes, not a
 *    rate (4 ms of 20 s: 0.02 %);
 *  - the two caps (elapsed <= fill_ns, tokens <= burst) only act after the
 *    bucket has been full or idle (fill_ns is the time from the deepest
 *    floor to full), and move by at most the same tick;
 *  - within a tick no tokens accrue, so credit arrives in steps of
 *    d x rate, 1/125 of the default bucket (rate x 500 ms): the debt and
 *    the burst absorb the steps, the drops of a saturating flow move by at
 *    most a tick.
 * That holds while the clock advances tick by tick. A tick can come late
 * (a loaded machine, an emulated guest: measured 6.64 of 8 Mbit/s in a
 * TCG guest at load 10, burst 16 KB): packets then meet a stale clock,
 * drain the bucket, and the late jump is credited in full unless it
 * exceeds fill_ns (lags of 100-400 ms were seen on this 2-CPU VM at load
 * 20, with a 64-CPU emulated guest beside it). So a bucket that fills in under KS_COARSE_MIN_FILL_NS (50 ms: 12
 * ticks at HZ=250) keeps the exact clock; the default bucket (rate x 500
 * ms, at least 128 KB) fills in 500 ms or more and takes the coarse one.
 * EDT (pace, delay) keeps bpf_ktime_get_ns(): its timestamps are absolute
 * departure times that fq compares with its own clock.
 * TestCoarseClockLongRunRate checks the long-run rate through the kernel.
 */
static __always_inline __u64 bucket_now(struct ks_rule *r)
{
	if (ks_coarse_clock && r->fill_ns >= KS_COARSE_MIN_FILL_NS)
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * Drop-mode token bucket. Why it is not the textbook one:
 *  - It may run into debt (cfg->debt bytes): a packet passes while the
 *    bucket holds anything, and is charged in full. A strict bucket starves
 *    64 KB GSO skbs whenever fewer than 64 KB of tokens are left, which is
 *    most of the time at low rates; the debt is repaid before the next
 *    packet passes, so the long-term rate is exact.
 *  - Sparse packets (pure ACKs, pings, DNS: <= sparse_max bytes) may go
 *    deeper, down to -burst. Dropping a saturating flow's competitors' small
 *    packets (its own download's ACKs, a health check) is what turns a
 *    policer into an outage; they are still charged, so the rate holds.
 * Returns 1 to pass, 0 to drop.
 */
static __always_inline int bucket_admit_locked(struct ks_rule *r, __u64 now,
					__u64 wire)
{
	/* Fixed point (bytes x 2^32) instead of a division per packet: tokens
	 * accrue by elapsed x rate_q32, exact to the rounding of rate_q32 (at
	 * most 1e-4 relative at 8 kbit/s, less above) and never truncated per
	 * refill, which at 100k small packets a second would cost 0.8 Mbit/s. */
	__s64 floor = -(__s64)(r->debt << 32);
	__s64 cost = (__s64)(wire << 32);
	__s64 cap = (__s64)(r->burst << 32);
	__u64 elapsed;
	int pass;

	if ((r->flags & KS_F_SPARSE) && wire <= r->sparse_max)
		floor = -cap;

	bpf_spin_lock(&r->lock);
	elapsed = now - r->last_ns;
	if ((__s64)elapsed < 0)
		elapsed = 0;
	/* elapsed <= fill_ns = 2 x burst/rate: elapsed*rate_q32 <= 2 x burst
	 * and tokens_q32 below 3 x burst in 32.32 fixed point, < 2^63 for
	 * bursts up to 512 MB (user space refuses larger). */
	if (elapsed > r->fill_ns)
		elapsed = r->fill_ns;
	r->tokens_q32 += elapsed * r->rate_q32;
	if (r->tokens_q32 > cap)
		r->tokens_q32 = cap;
	r->last_ns = now;
	pass = r->tokens_q32 - cost >= floor;
	if (pass)
		r->tokens_q32 -= cost;
	bpf_spin_unlock(&r->lock);
	return pass;
}

/*
 * The same bucket without the spin lock, for kernels with BPF atomics
 * (5.12+: fetch-add and compare-exchange). The lock was ~45 ns a packet on
 * this machine (bpf_spin_lock disables interrupts, which a VM pays for);
 * two uncontended atomics cost a few. The same arithmetic, split in two
 * steps that each stay exact under concurrency:
 *  - refill: the CPU whose compare-exchange moves last_ns from the value
 *    it read to its own (later) clock reading credits exactly that
 *    interval, so every nanosecond is credited once, and last_ns never
 *    moves back (a reading older than last_ns credits nothing);
 *  - admission: a compare-exchange loop on tokens_q32 applies the burst
 *    cap and the charge to the value it read. After four lost races (a
 *    veth hammered from several CPUs at once) the packet passes and is
 *    charged with a plain atomic add: the debt still repays it, so the
 *    long-run rate holds; only the floor is exceeded by that packet.
 * The credit is added before the cap is applied (on the next admission):
 * at most burst + fill_ns x rate = 3 x burst in 32.32 fixed point, which
 * fits for bursts up to 512 MB (MaxBurst; user space refuses larger).
 * User space writes the rule with BPF_F_LOCK, which these atomics ignore:
 * a rule change racing a packet may lose that packet's charge, once.
 */
static __always_inline int bucket_admit_atomic(struct ks_rule *r, __u64 now,
					       __u64 wire)
{
	__s64 floor = -(__s64)(r->debt << 32);
	__s64 cost = (__s64)(wire << 32);
	__s64 cap = (__s64)(r->burst << 32);
	__u64 last = *(volatile __u64 *)&r->last_ns;

	if ((r->flags & KS_F_SPARSE) && wire <= r->sparse_max)
		floor = -cap;
	if ((__s64)(now - last) > 0 &&
	    __sync_val_compare_and_swap(&r->last_ns, last, now) == last) {
		__u64 elapsed = now - last;

		/* elapsed <= fill_ns: see bucket_admit_locked. */
		if (elapsed > r->fill_ns)
			elapsed = r->fill_ns;
		__sync_fetch_and_add(&r->tokens_q32, (__s64)(elapsed * r->rate_q32));
	}
	for (int i = 0; i < 4; i++) {
		__s64 cur = *(volatile __s64 *)&r->tokens_q32;
		__s64 lvl = cur > cap ? cap : cur;

		if (lvl - cost < floor)
			return 0;
		if (__sync_val_compare_and_swap(&r->tokens_q32, cur, lvl - cost) == cur)
			return 1;
	}
	__sync_fetch_and_add(&r->tokens_q32, -cost);
	return 1;
}

/* 1 when the kernel has BPF atomics (fetch, compare-exchange: 5.12+), set
 * by user space at load time (a probe); older kernels take the lock. */
volatile const __u32 ks_atomics = 0;

static __always_inline int bucket_admit(struct ks_rule *r, __u64 now,
					__u64 wire)
{
	if (ks_atomics)
		return bucket_admit_atomic(r, now, wire);
	return bucket_admit_locked(r, now, wire);
}

/*
 * EDT: the departure time of this packet. Pacing reserves wire/rate of the
 * link per packet; delay adds a fixed (+ jittered) offset on top. Returns 0
 * when the departure lies beyond the horizon (the caller drops).
 */
static __always_inline __u64 edt_departure(struct __sk_buff *skb,
					   struct ks_rule *cfg, __u32 flags,
					   __u64 now, __u64 wire)
{
	__u64 t = now;

	if (flags & KS_F_PACE) {
		__u64 next;

		bpf_spin_lock(&cfg->lock);
		next = cfg->t_next;
		if (next < now)
			next = now;
		if (next - now > cfg->horizon_ns) {
			bpf_spin_unlock(&cfg->lock);
			return 0;
		}
		cfg->t_next = next + wire * NSEC_PER_SEC / cfg->rate;
		bpf_spin_unlock(&cfg->lock);
		t = next;
	}
	if (flags & KS_F_DELAY) {
		__u64 d = cfg->delay_ns;

		if (cfg->jitter_ns) {
			/* uniform in [delay - jitter, delay + jitter] */
			__u64 span = 2 * cfg->jitter_ns + 1;
			d = d - cfg->jitter_ns + bpf_get_prandom_u32() % span;
		}
		t += d;
		if (t - now > cfg->horizon_ns)
			return 0;
	}
	/* Never move a packet earlier than the stack already asked for. */
	if (t < skb->tstamp)
		t = skb->tstamp;
	return t;
}

/*
 * Targeting: the flag bits of the targets the packet does not match. Only
 * rules with KS_F_TARGETED get here; the others pay one flag test. A
 * packet that is not IP matches no target.
 *
 * A global function: the verifier checks it once, on its own, rather than
 * once for every state the caller reaches it in (parse's paths times the
 * range loop made the programs 7x longer to verify). Global functions take
 * only the context and scalars on 5.10, so it looks the rule up and parses
 * the headers again itself: ~20 ns, for targeted rules only.
 */
__attribute__((noinline)) int ks_untargeted(struct __sk_buff *skb, __u32 idx,
					    __u32 ifindex, __u32 dir)
{
	struct ks_rule *cfg = bpf_map_lookup_elem(&ks_rules, &idx);
	struct ks_pkt p = {};
	struct ks_targets *tg;
	__u32 match, ports, peers, off = 0, n;
	__u16 sport, dport;

	if (!cfg)
		return 0;
	parse(skb, &p);
	if (!p.fk.family)
		return cfg->flags;
	tg = &cfg->tg;
	switch (p.fk.proto) {
	case IPPROTO_TCP:
		match = tg->tcp;
		break;
	case IPPROTO_UDP:
		match = tg->udp;
		break;
	case IPPROTO_SCTP:
		match = tg->sctp;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		match = tg->icmp;
		break;
	default:
		match = 0;
	}
	match |= tg->any_proto;
	ports = tg->any_port;
	if (p.ports) {
		sport = bpf_ntohs(p.fk.sport);
		dport = bpf_ntohs(p.fk.dport);
		n = tg->nranges;
		for (__u32 i = 0; i < KS_MAX_RANGES; i++) {
			struct ks_port_range *r = &tg->ranges[i];

			if (i >= n)
				break;
			if ((sport >= r->lo && sport <= r->hi) ||
			    (dport >= r->lo && dport <= r->hi))
				ports |= r->targets;
		}
	}
	match &= ports;
	peers = tg->any_peer;
	if (match & ~peers) {
		/* The peer: whom the pod sends to, or hears from. */
		struct ks_peer_key pk = {
			.ifindex = ifindex,
			.dir = dir,
			.family = p.fk.family,
		};
		__u32 *v;

		pk.prefixlen = 64 + (p.fk.family == 4 ? 32 : 128);
		if (dir == KS_DIR_EGRESS)
			__builtin_memcpy(pk.addr, p.fk.daddr, 16);
		else
			__builtin_memcpy(pk.addr, p.fk.saddr, 16);
		v = bpf_map_lookup_elem(&ks_peers, &pk);
		if (v)
			peers |= *v;
	}
	match &= peers;
	for (__u32 i = 0; i < KS_MAX_TARGETS; i++)
		if (!(match & (1u << i)))
			off |= tg->flags[i];
	return off;
}

/*
 * Gilbert-Elliott loss with netem's gemodel semantics (sch_netem.c,
 * loss_gilb_ell): the state a packet finds decides its fate (lost with
 * 1-k in good, 1-h in bad), and the state moves on (p: good->bad, r:
 * bad->good) as it passes. The state is per {interface, direction}, under
 * the rule's lock. Returns 1 to drop.
 */
static __always_inline int gilbert_lose(struct ks_rule *r)
{
	__u64 move = bpf_get_prandom_u32(), fate = bpf_get_prandom_u32();
	int lose;

	bpf_spin_lock(&r->lock);
	if (!r->ge_bad) {
		if (move < r->ge_p)
			r->ge_bad = 1;
		lose = fate < r->ge_1k;
	} else {
		if (move < r->ge_r)
			r->ge_bad = 0;
		lose = fate >= r->ge_h;
	}
	bpf_spin_unlock(&r->lock);
	return lose;
}

/*
 * The rule's verdict on one packet: loss, then the bucket, then EDT. Drops
 * are counted here, under their reason. flags are the rule's, less those
 * of targets the packet does not match.
 */
static __always_inline int decide(struct __sk_buff *skb, struct ks_rule *cfg,
				  __u32 flags, struct ks_counters *c,
				  __u64 wire, __u32 segs, __u32 *why)
{
	if ((flags & KS_F_LOSS) &&
	    (__u64)bpf_get_prandom_u32() < cfg->loss_thresh)
		return drop(c, KS_REASON_LOSS, wire, segs);
	if ((flags & KS_F_GILBERT) && gilbert_lose(cfg))
		return drop(c, KS_REASON_LOSS, wire, segs);

	if (!(flags & (KS_F_RATE | KS_F_PACE | KS_F_DELAY)))
		return TC_ACT_UNSPEC;
	if (!cfg->rate && (flags & (KS_F_RATE | KS_F_PACE)))
		return TC_ACT_UNSPEC; /* user space never writes this */

	if ((flags & KS_F_RATE) && !bucket_admit(cfg, bucket_now(cfg), wire)) {
		*why = KS_REASON_BANDWIDTH;
		return drop(c, KS_REASON_BANDWIDTH, wire, segs);
	}

	if (flags & (KS_F_PACE | KS_F_DELAY)) {
		__u64 now = bpf_ktime_get_ns();
		__u64 t = edt_departure(skb, cfg, flags, now, wire);

		if (!t)
			return drop(c, KS_REASON_HORIZON, wire, segs);
		skb->tstamp = t;
	}
	/* UNSPEC, not OK: later filters (custom programs, other tools) run. */
	return TC_ACT_UNSPEC;
}

/*
 * Duplicate: bpf_clone_redirect() sends a copy of the packet through the
 * same hook of the same device, where it meets this program again and
 * takes its own chances with loss, the bucket and delay. It must not be
 * duplicated again (a cascade), so the clone is recognized:
 *  - at a tc egress hook (pod ingress; the pod-side instance) the clone is
 *    transmitted synchronously (dev_queue_xmit) and re-enters this program
 *    on the same CPU before bpf_clone_redirect() returns: a per-CPU flag
 *    set around the call marks it, and touches nothing in the packet;
 *  - at a tc ingress hook (pod egress) the clone is queued to the CPU's
 *    backlog (netif_rx) and comes back later: it carries the ks_dup_mark
 *    bit of skb->mark, set on the original for the call only. Packets the
 *    pod sends arrive with mark 0 (a veth crossing namespaces scrubs it),
 *    so the bit can only be our clone's; handle() clears it at once, before
 *    any later filter or the stack sees it.
 */
static __always_inline void duplicate(struct __sk_buff *skb, bool tc_ingress,
				      struct ks_counters *c)
{
	__u32 zero = 0, *guard;
	long err;

	if (tc_ingress) {
		__u32 mark = skb->mark;

		skb->mark = mark | ks_dup_mark;
		err = bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
		skb->mark = mark;
	} else {
		guard = bpf_map_lookup_elem(&ks_dup_guard, &zero);
		if (!guard)
			return;
		*guard = 1;
		err = bpf_clone_redirect(skb, skb->ifindex, 0);
		*guard = 0;
	}
	if (!err && c)
		__sync_fetch_and_add(&c->duplicated, 1);
}

/* A duplicate's clone, coming through again (see duplicate())? */
static __always_inline bool is_clone(struct __sk_buff *skb, bool tc_ingress)
{
	__u32 zero = 0, *guard;

	if (tc_ingress) {
		__u32 mark = skb->mark;

		if (!(mark & ks_dup_mark))
			return false;
		skb->mark = mark & ~ks_dup_mark;
		return true;
	}
	guard = bpf_map_lookup_elem(&ks_dup_guard, &zero);
	return guard && *guard;
}

/*
 * Is the packet's L4 checksum still to be computed (CHECKSUM_PARTIAL: sent
 * from this node, offloaded)? Its checksum field then holds only the
 * pseudo-header's sum, which is what is compared here; a complete
 * checksum equals it by chance once in 65536.
 */
static __always_inline bool csum_partial(struct __sk_buff *skb,
					 struct ks_pkt *p, __u16 check)
{
	__u32 ph[10] = {};
	__u32 l4len = skb->len - p->l4_off;
	__s64 sum;

	if (p->fk.family == 4) {
		__builtin_memcpy(&ph[0], p->fk.saddr, 4);
		__builtin_memcpy(&ph[1], p->fk.daddr, 4);
		ph[2] = bpf_htonl(((__u32)p->fk.proto << 16) | (l4len & 0xffff));
		sum = bpf_csum_diff(0, 0, ph, 12, 0);
	} else {
		__builtin_memcpy(&ph[0], p->fk.saddr, 16);
		__builtin_memcpy(&ph[4], p->fk.daddr, 16);
		ph[8] = bpf_htonl(l4len);
		ph[9] = bpf_htonl(p->fk.proto);
		sum = bpf_csum_diff(0, 0, ph, 40, 0);
	}
	if (sum < 0)
		return false;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum == check;
}

enum { KS_CORRUPT_NONE, KS_CORRUPT_DONE, KS_CORRUPT_SKIPPED };

/*
 * Corrupt: flip one random bit of the TCP or UDP payload. The receiver
 * must see it as a checksum failure, as on a real link:
 *  - BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb's skb->csum true
 *    to the new bytes, so the receiver's check uses the corrupted data;
 *  - bpf_csum_level(RESET) turns CHECKSUM_UNNECESSARY (a NIC checked it)
 *    into CHECKSUM_NONE, so the receiver checks again;
 *  - a CHECKSUM_PARTIAL skb (and GSO, always partial) is never checked by
 *    a receiver on this node: its checksum is computed later, over the
 *    corrupted bytes, or never on a veth. Such packets are left intact
 *    and counted as corrupt_skipped; for pod egress the agent turns TX
 *    checksum offload off on the pod's eth0 so that its packets carry
 *    complete checksums. UDP without a checksum (IPv4, 0) is skipped too.
 * Global, like ks_untargeted, so that it is verified once.
 */
__attribute__((noinline)) int ks_corrupt(struct __sk_buff *skb)
{
	__u32 rnd = bpf_get_prandom_u32(), len = skb->len, off;
	struct ks_pkt p = {};
	__u16 check;
	__u8 b;

	parse(skb, &p);
	if (!p.ports || (p.fk.proto != IPPROTO_TCP && p.fk.proto != IPPROTO_UDP))
		return KS_CORRUPT_NONE; /* no L4 payload we know of */
	if (len <= p.hdr_len)
		return KS_CORRUPT_NONE;
	if (skb->gso_segs > 1)
		return KS_CORRUPT_SKIPPED;
	if (bpf_skb_load_bytes(skb, p.l4_off + (p.fk.proto == IPPROTO_TCP ? 16 : 6),
			       &check, 2))
		return KS_CORRUPT_NONE;
	if ((p.fk.proto == IPPROTO_UDP && !check) || csum_partial(skb, &p, check))
		return KS_CORRUPT_SKIPPED;
	off = p.hdr_len + (rnd >> 3) % (len - p.hdr_len);
	if (bpf_skb_load_bytes(skb, off, &b, 1))
		return KS_CORRUPT_NONE;
	b ^= 1 << (rnd & 7);
	if (bpf_skb_store_bytes(skb, off, &b, 1, BPF_F_RECOMPUTE_CSUM))
		return KS_CORRUPT_NONE;
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
	return KS_CORRUPT_DONE;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 dir,
				  bool at_pod)
{
	__u32 ifindex = at_pod ? ks_host_ifindex : skb->ifindex;
	/* The hook this runs at: pod egress is the host veth's tc ingress and
	 * the pod eth0's tc egress; pod ingress the other way round. */
	bool tc_ingress = (dir == KS_DIR_EGRESS) != at_pod;
	struct ks_pkt p = {};
	struct ks_rule *cfg;
	struct ks_counters *c;
	struct ks_pcpu_counters *pc;
	__u32 flags, segs, idx, why = KS_REASON_MAX;
	__s64 i;
	__u64 wire;
	int verdict;

	i = ks_index_of(ifindex, dir);
	if (i < 0)
		return TC_ACT_UNSPEC; /* not ours (a stale filter): stay out */
	idx = i;
	cfg = bpf_map_lookup_elem(&ks_rules, &idx);
	if (!cfg)
		return TC_ACT_UNSPEC;
	flags = cfg->flags;
	if (!(flags & KS_F_SET))
		return TC_ACT_UNSPEC;
	/* Exactly one program handles each direction: the pod-side instance
	 * when the direction's rule is marked at-pod, else the host-side one
	 * (the flag is per {interface, direction}: each direction decides). */
	if (!!(flags & KS_F_AT_POD) != at_pod)
		return TC_ACT_UNSPEC;

	if (flags & KS_F_FLOWS)
		parse(skb, &p);
	wire = ks_wire(skb, &p, &segs);
	if (flags & KS_F_TARGETED)
		flags &= ~(__u32)ks_untargeted(skb, idx, ifindex, dir);

	pc = bpf_map_lookup_elem(&ks_pcpu, &idx);
	if (pc) {
		pc->packets += segs;
		pc->bytes += wire;
	}
	/* Shared counters: only the rarer paths below write them. */
	c = bpf_map_lookup_elem(&ks_stats, &idx);

	/* Before loss, as netem: the copy takes its own chances. */
	if ((flags & KS_F_DUP) && !is_clone(skb, tc_ingress) &&
	    (__u64)bpf_get_prandom_u32() < cfg->dup_thresh)
		duplicate(skb, tc_ingress, c);

	verdict = decide(skb, cfg, flags, c, wire, segs, &why);
	/* Only on a bandwidth drop, so no packet that passes pays for it: was
	 * it TCP data, which the sender will have to retransmit? */
	if (c && verdict == TC_ACT_SHOT && why == KS_REASON_BANDWIDTH) {
		if (!p.fk.family)
			parse(skb, &p);
		if (p.fk.proto == IPPROTO_TCP && skb->len > p.hdr_len)
			__sync_fetch_and_add(&c->tcp_data_bw_drops, segs);
	}

	if ((flags & KS_F_CORRUPT) && verdict != TC_ACT_SHOT &&
	    (__u64)bpf_get_prandom_u32() < cfg->corrupt_thresh) {
		int r = ks_corrupt(skb);

		if (c && r == KS_CORRUPT_DONE)
			__sync_fetch_and_add(&c->corrupted, 1);
		else if (c && r == KS_CORRUPT_SKIPPED)
			__sync_fetch_and_add(&c->corrupt_skipped, 1);
	}

	if ((flags & KS_F_FLOWS) && p.fk.family) {
		p.fk.ifindex = ifindex;
		p.fk.dir = dir;
		/* Jiffies, not bpf_ktime_get_ns(): flow ages need no more than
		 * a tick's precision, and the clock read costs ~35 ns a packet
		 * in a VM, more than the rest of the flow record. */
		flow_seen(&p, bpf_jiffies64(), segs, wire, verdict == TC_ACT_SHOT);
	}
	return verdict;
}

/* Attached at the host veth's tc ingress: what the pod sends. */
SEC("tc")
int ks_pod_egress(struct __sk_buff *skb)
{
	return handle(skb, KS_DIR_EGRESS, false);
}

/* Attached at the host veth's tc egress: what the pod receives. */
SEC("tc")
int ks_pod_ingress(struct __sk_buff *skb)
{
	return handle(skb, KS_DIR_INGRESS, false);
}

/*
 * Attached at the pod's own eth0 tc egress (inside its netns), under an fq
 * root qdisc there, when pod egress is paced or delayed: a timestamp set at
 * the host veth's ingress would meet no qdisc to honour it.
 */
SEC("tc")
int ks_pod_side(struct __sk_buff *skb)
{
	return handle(skb, KS_DIR_EGRESS, true);
}

/*
 * Attached at the pod's own eth0 tc ingress (inside its netns) when what
 * the pod receives can skip the host veth's tc egress (bpf_redirect_peer,
 * netkit, a foreign program there): every delivery into the pod crosses
 * this hook. Drop-mode rules only; a timestamp here meets no qdisc.
 */
SEC("tc")
int ks_pod_side_ingress(struct __sk_buff *skb)
{
	return handle(skb, KS_DIR_INGRESS, true);
}

/* Removes one flow record for user space (lib/flows.h, flow_forget). */
SEC("tc")
int ks_flow_forget(struct __sk_buff *skb)
{
	return flow_forget(skb);
}

/* ks_clock pairs the two clocks for user space, which converts flow
 * timestamps (jiffies) to wall time: run it with BPF_PROG_TEST_RUN. */
__u64 ks_clock_jiffies = 0;
__u64 ks_clock_ns = 0;

SEC("tc")
int ks_clock(struct __sk_buff *skb)
{
	ks_clock_jiffies = bpf_jiffies64();
	ks_clock_ns = bpf_ktime_get_ns();
	return TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
