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
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "shaper.h"

#define NSEC_PER_SEC 1000000000ULL
/* Header bytes assumed per segment when a GSO skb's headers cannot be
 * parsed (Ethernet + IPv4 + TCP with timestamps). */
#define KS_DEFAULT_HDR 66

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_key);
	__type(value, struct ks_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_key);
	__type(value, struct ks_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_stats SEC(".maps");

/* Per-flow records, bounded: the least recently seen flow is evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ks_flow_key);
	__type(value, struct ks_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ks_flows SEC(".maps");

/*
 * The host veth a pod-side program instance works for. Pod eth0 ifindexes
 * repeat across pods, so the key cannot come from the skb there; user space
 * loads one instance per pod that paces its egress, with this set.
 */
volatile const __u32 ks_host_ifindex = 0;

/* Force BTF emission of types only user space uses. */
const enum ks_reason ks_reason_unused __attribute__((unused));
const enum ks_flags ks_flags_unused __attribute__((unused));

/* What the parser found in a packet's headers. */
struct ks_pkt {
	struct ks_flow_key fk; /* proto == 0: not IP */
	__u32 hdr_len;         /* L2+L3+L4 header bytes, for GSO accounting */
	__u8 tcp_flags;
};

/*
 * Parses Ethernet, IPv4/IPv6 (no extension headers) and TCP/UDP from the
 * linear head. Unknown protocols leave proto 0; hdr_len then is a guess.
 */
static __always_inline void parse(struct __sk_buff *skb, struct ks_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 l3;
	__u8 proto;

	p->hdr_len = KS_DEFAULT_HDR;
	if ((void *)(eth + 1) > end)
		return;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return;
		l3 = ip->ihl * 4;
		if (l3 < sizeof(*ip))
			return;
		proto = ip->protocol;
		p->fk.family = 4;
		__builtin_memcpy(p->fk.saddr, &ip->saddr, 4);
		__builtin_memcpy(p->fk.daddr, &ip->daddr, 4);
		/* Later fragments carry no L4 header. */
		if (ip->frag_off & bpf_htons(0x1fff)) {
			p->fk.proto = proto;
			return;
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return;
		l3 = sizeof(*ip6);
		proto = ip6->nexthdr;
		p->fk.family = 6;
		__builtin_memcpy(p->fk.saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->fk.daddr, &ip6->daddr, 16);
	} else {
		return;
	}
	p->fk.proto = proto;
	if (l3 > 60)
		return;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + sizeof(*eth) + l3;

		if ((void *)(tcp + 1) > end)
			return;
		p->fk.sport = tcp->source;
		p->fk.dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->hdr_len = sizeof(*eth) + l3 + tcp->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = data + sizeof(*eth) + l3;

		if ((void *)(udp + 1) > end)
			return;
		p->fk.sport = udp->source;
		p->fk.dport = udp->dest;
		p->hdr_len = sizeof(*eth) + l3 + sizeof(*udp);
	} else {
		p->hdr_len = sizeof(*eth) + l3;
	}
}

/*
 * Records the packet in its flow. Counters are atomic (a flow's packets may
 * be handled on several CPUs at once); last_ns and the flag bits are plain
 * stores (a lost race costs a nanosecond of age or a flag seen again on the
 * next packet; atomic OR needs 5.12).
 */
static __always_inline void flow_seen(struct ks_pkt *p, __u64 jiffies, __u32 segs,
				      __u64 wire, int dropped)
{
	struct ks_flow *f = bpf_map_lookup_elem(&ks_flows, &p->fk);

	if (!f) {
		struct ks_flow nf = {
			.packets = segs, .bytes = wire,
			.first_jiffies = jiffies, .last_jiffies = jiffies,
			.drops = dropped ? segs : 0,
			.tcp_flags = p->tcp_flags,
		};
		/* NOEXIST: if another CPU created it meanwhile, count there. */
		if (!bpf_map_update_elem(&ks_flows, &p->fk, &nf, BPF_NOEXIST))
			return;
		f = bpf_map_lookup_elem(&ks_flows, &p->fk);
		if (!f)
			return;
	}
	__sync_fetch_and_add(&f->packets, segs);
	__sync_fetch_and_add(&f->bytes, wire);
	if (dropped)
		__sync_fetch_and_add(&f->drops, segs);
	f->last_jiffies = jiffies;
	if ((f->tcp_flags | p->tcp_flags) != f->tcp_flags)
		f->tcp_flags |= p->tcp_flags;
}

static __always_inline struct ks_counters *counters_of(struct ks_key *key)
{
	struct ks_counters *c = bpf_map_lookup_elem(&ks_stats, key);

	if (c)
		return c;
	/* The agent creates the entry on apply; this only covers a race. */
	struct ks_counters zero = {};
	bpf_map_update_elem(&ks_stats, key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&ks_stats, key);
}

static __always_inline int drop(struct ks_counters *c, __u32 reason,
				__u64 wire, __u32 segs)
{
	if (c && reason < KS_REASON_MAX) {
		c->drop_packets[reason] += segs;
		c->drop_bytes[reason] += wire;
	}
	return TC_ACT_SHOT;
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
static __always_inline int bucket_admit(struct ks_rule *r, __u64 now,
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
	/* Capping elapsed at the fill time keeps elapsed*rate_q32 < 2^63. */
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
 * EDT: the departure time of this packet. Pacing reserves wire/rate of the
 * link per packet; delay adds a fixed (+ jittered) offset on top. Returns 0
 * when the departure lies beyond the horizon (the caller drops).
 */
static __always_inline __u64 edt_departure(struct __sk_buff *skb,
					   struct ks_rule *cfg, __u64 now,
					   __u64 wire)
{
	__u64 t = now;

	if (cfg->flags & KS_F_PACE) {
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
	if (cfg->flags & KS_F_DELAY) {
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
 * The rule's verdict on one packet: loss, then the bucket, then EDT. Drops
 * are counted here, under their reason.
 */
static __always_inline int decide(struct __sk_buff *skb, struct ks_rule *cfg,
				  struct ks_counters *c, __u64 *now,
				  __u64 wire, __u32 segs)
{
	if ((cfg->flags & KS_F_LOSS) &&
	    (__u64)bpf_get_prandom_u32() < cfg->loss_thresh)
		return drop(c, KS_REASON_LOSS, wire, segs);

	if (!(cfg->flags & (KS_F_RATE | KS_F_PACE | KS_F_DELAY)))
		return TC_ACT_UNSPEC;
	if (!cfg->rate && (cfg->flags & (KS_F_RATE | KS_F_PACE)))
		return TC_ACT_UNSPEC; /* user space never writes this */

	if (!*now)
		*now = bpf_ktime_get_ns();

	if ((cfg->flags & KS_F_RATE) && !bucket_admit(cfg, *now, wire))
		return drop(c, KS_REASON_BANDWIDTH, wire, segs);

	if (cfg->flags & (KS_F_PACE | KS_F_DELAY)) {
		__u64 t = edt_departure(skb, cfg, *now, wire);

		if (!t)
			return drop(c, KS_REASON_HORIZON, wire, segs);
		skb->tstamp = t;
	}
	/* UNSPEC, not OK: later filters (custom programs, other tools) run. */
	return TC_ACT_UNSPEC;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 dir,
				  bool at_pod)
{
	struct ks_key key = {
		.ifindex = at_pod ? ks_host_ifindex : skb->ifindex,
		.dir = dir,
	};
	struct ks_pkt p = {};
	struct ks_rule *cfg;
	struct ks_counters *c;
	__u32 segs = skb->gso_segs;
	__u64 wire = skb->len;
	__u64 now = 0;
	bool flows;
	int verdict;

	cfg = bpf_map_lookup_elem(&ks_rules, &key);
	if (!cfg)
		return TC_ACT_UNSPEC; /* not ours (a stale filter): stay out */
	/* Exactly one program handles each direction: the pod-side instance
	 * when the rule is EDT on pod egress, else the host-side one. */
	if (!!(cfg->flags & KS_F_AT_POD) != at_pod)
		return TC_ACT_UNSPEC;

	flows = cfg->flags & KS_F_FLOWS;
	if (segs > 1 || flows)
		parse(skb, &p);
	if (segs > 1)
		wire += (__u64)(segs - 1) * p.hdr_len;
	else
		segs = 1;

	c = counters_of(&key);
	if (c) {
		c->packets += segs;
		c->bytes += wire;
	}

	verdict = decide(skb, cfg, c, &now, wire, segs);

	if (flows && p.fk.family) {
		p.fk.ifindex = key.ifindex;
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
