/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by the kubeshaper TC programs and mirrored, field for field,
 * by Go structs that bpf2go generates from the BTF (pkg/datapath).
 * Changing a layout here changes a pinned map's value size: the loader then
 * refuses the old pin and recreates it (state is lost once, not corrupted).
 */
#ifndef KUBESHAPER_SHAPER_H
#define KUBESHAPER_SHAPER_H

#include <linux/types.h>

/* Directions are named from the pod's point of view. */
enum ks_dir {
	KS_DIR_EGRESS = 0,  /* pod sends: host veth tc ingress */
	KS_DIR_INGRESS = 1, /* pod receives: host veth tc egress */
};

/* Why a packet was dropped; indexes ks_counters.drop_*. */
enum ks_reason {
	KS_REASON_BANDWIDTH = 0, /* token bucket empty (drop mode) */
	KS_REASON_LOSS = 1,      /* injected random loss */
	KS_REASON_HORIZON = 2,   /* EDT departure too far in the future */
	KS_REASON_PROGRAM = 3,   /* a custom program said TC_ACT_SHOT */
	KS_REASON_MAX = 8,
};

/* ks_config.flags */
enum ks_flags {
	KS_F_RATE = 1 << 0,   /* drop-mode token bucket */
	KS_F_PACE = 1 << 1,   /* EDT: stamp skb->tstamp at rate (needs fq) */
	KS_F_LOSS = 1 << 2,   /* random loss with probability loss_thresh/2^32 */
	KS_F_DELAY = 1 << 3,  /* EDT: add delay (+ jitter) (needs fq) */
	KS_F_SPARSE = 1 << 4, /* small packets ride on the bucket's debt */
	KS_F_QDISC = 1 << 5,  /* a kernel qdisc (tbf) enforces rate: count only */
	KS_F_AT_POD = 1 << 6, /* this direction runs on the pod's eth0 (EDT for
			       * pod egress, where fq can honour it; a bypassed
			       * host side): the host-side program stays out */
	KS_F_FLOWS = 1 << 7,  /* keep per-flow records (ks_flows) */
	KS_F_TARGETED = 1 << 8, /* some rules apply to targets only (targets[]) */
	KS_F_GILBERT = 1 << 9,  /* Gilbert-Elliott burst loss (ge_*) */
	KS_F_DUP = 1 << 10,     /* duplicate with probability dup_thresh/2^32 */
	KS_F_CORRUPT = 1 << 11, /* flip a payload bit, p = corrupt_thresh/2^32 */
	KS_F_SET = 1 << 30,     /* the entry holds a rule (slot arrays have no
				 * absent entries) */
};

/* Limits of targeting: a target per kind of rule at most (bandwidth,
 * loss, delay, duplicate, corrupt), each with up to 8 port ranges. */
#define KS_MAX_TARGETS 5
#define KS_MAX_RANGES 40

/* A port range of some targets: inclusive, host byte order. The source or
 * the destination port may match (as tcpdump's "port"). */
struct ks_port_range {
	__u16 lo;
	__u16 hi;
	__u8 targets; /* bit i: targets[i] has this range */
	__u8 pad;
};

/*
 * Which packets some of a direction's rules apply to, compiled by user
 * space into sets of targets (bit i = target i) so that the datapath runs
 * one flat loop and no per-target branches. A packet matches target i when
 * it is IP and passes all three conditions: protocol, ports, peer. The
 * rules (flag bits) of a target the packet does not match are off for
 * that packet: it is only counted.
 */
struct ks_targets {
	__u32 flags[KS_MAX_TARGETS]; /* the ks_flags bits target i gates */
	__u8 any_proto;  /* targets without a protocol condition */
	__u8 tcp;        /* targets taking TCP */
	__u8 udp;
	__u8 sctp;
	__u8 icmp;       /* ICMP and ICMPv6 */
	__u8 any_port;   /* targets without a port condition */
	__u8 any_peer;   /* targets without a peer condition (ks_peers) */
	__u8 nranges;
	struct ks_port_range ranges[KS_MAX_RANGES];
};

/*
 * ks_peers (LPM trie): the peer prefixes of each {interface, direction}'s
 * targets. The peer is the destination of what the pod sends and the
 * source of what it receives. The value is the set of targets (bit i =
 * targets[i]) whose prefixes contain the key's prefix, so that the longest
 * match alone answers for every target.
 */
struct ks_peer_key {
	__u32 prefixlen; /* 64 + the prefix length of addr */
	__u32 ifindex;
	__u8 dir;
	__u8 family;     /* 4 or 6 */
	__u8 pad[2];
	__u8 addr[16];   /* IPv4 in the first 4 bytes */
};

/* How user space names an {interface, direction}; the programs find its
 * entries through the interface's slot (lib/slots.h). */
struct ks_key {
	__u32 ifindex; /* host-side veth, in the netns that holds it */
	__u32 dir;     /* enum ks_dir */
};

/*
 * One {interface, direction}'s rule and the datapath's state for it, in one
 * map value so the hot path does a single lookup. User space writes the
 * rule fields with BPF_F_LOCK after reading the state fields the same way,
 * so a rule change keeps the bucket where it is.
 */
struct ks_rule {
	struct bpf_spin_lock lock;
	__u32 flags;
	__u32 sparse_max;  /* bytes: packets up to this size are "sparse" */
	__u32 ifindex;     /* whose entry this is (user space's record) */
	__u64 rate;        /* bytes per second, L2 (wire) bytes */
	__u64 rate_q32;    /* the same in bytes per ns, fixed point (x 2^32) */
	__u64 burst;       /* bytes the bucket holds when full */
	__u64 fill_ns;     /* time from the deepest floor to full: 2 x burst/rate */
	__u64 debt;        /* bytes the bucket may go below zero (see shaper.c) */
	__u64 loss_thresh; /* drop if prandom_u32 < loss_thresh (2^32 = all) */
	__u64 horizon_ns;  /* EDT: drop what would depart later than this */
	__u64 delay_ns;    /* EDT: fixed added latency */
	__u64 jitter_ns;   /* EDT: uniform jitter in [-jitter, +jitter] */
	/* Gilbert-Elliott loss (netem's gemodel), as thresholds on a random
	 * u32 (2^32: always): good->bad, bad->good, delivery in bad (h) and
	 * loss in good (1-k). */
	__u64 ge_p;
	__u64 ge_r;
	__u64 ge_h;
	__u64 ge_1k;
	__u64 dup_thresh;     /* duplicate if prandom_u32 < dup_thresh */
	__u64 corrupt_thresh; /* corrupt if prandom_u32 < corrupt_thresh */
	struct ks_targets tg;  /* KS_F_TARGETED */
	/* State, owned by the datapath. */
	__s64 tokens_q32;  /* bytes x 2^32; negative while in debt */
	__u64 last_ns;     /* last refill: the coarse clock (see shaper.c) */
	__u64 t_next;      /* EDT: earliest departure of the next packet */
	__u32 ge_bad;      /* Gilbert-Elliott: 1 while in the bad state */
	__u32 pad2;
};

/* What every packet adds: per CPU (ks_pcpu), summed by user space. */
struct ks_pcpu_counters {
	__u64 packets; /* every packet seen at the hook (GSO skb = its segments) */
	__u64 bytes;   /* wire bytes seen */
};

/*
 * Counters of an {interface, direction} as user space reports them. In the
 * map (ks_stats, shared by all CPUs, atomic adds) packets and bytes stay
 * zero: they are ks_pcpu's, added on read. Drops and the rest happen on a
 * minority of packets, so one shared copy serves them: ×CPUs of memory
 * (168 B × 192 CPUs = 32 KB per key) would buy nothing measurable.
 */
struct ks_counters {
	__u64 packets; /* user space: the sum of ks_pcpu */
	__u64 bytes;
	__u64 drop_packets[KS_REASON_MAX];
	__u64 drop_bytes[KS_REASON_MAX];
	__u64 duplicated;      /* clones sent (duplicate rule) */
	__u64 corrupted;       /* packets with a payload bit flipped */
	__u64 corrupt_skipped; /* drawn for corruption but left intact: the
				* receiver would not verify their checksum
				* (CHECKSUM_PARTIAL, GSO, UDP without one) */
	__u64 tcp_data_bw_drops; /* of drop_packets[BANDWIDTH], TCP segments
				  * carrying data: retransmissions the
				  * policer caused (issue 13) */
};

/*
 * One flow as seen on one {interface, direction}: addresses and ports as on
 * the wire (network byte order), IPv4 in the first 4 bytes of the address.
 */
struct ks_flow_key {
	__u32 ifindex;
	__u8 dir;
	__u8 proto;  /* IPPROTO_* */
	__u8 family; /* 4 or 6 */
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ks_flow {
	__u64 packets;   /* wire packets (a GSO skb counts its segments) */
	__u64 bytes;     /* wire bytes */
	__u64 first_jiffies; /* bpf_jiffies64() at the first packet */
	__u64 last_jiffies;  /* ... and at the latest */
	__u64 drops;     /* packets of this flow kubeshaper dropped */
	__u32 tcp_flags; /* OR of the TCP flags seen (FIN 0x01 … CWR 0x80) */
	__u32 pad;
};

/*
 * ks_flows is a set-associative table (bpf/lib/flows.h): the set is a hash
 * of the key, a flow lives in one of the set's ways. A way whose
 * key.family is 0 is free.
 */
#define KS_FLOW_WAYS 8

struct ks_flow_way {
	struct ks_flow_key key;
	__u32 pad;
	struct ks_flow stats;
};

struct ks_flow_set {
	struct bpf_spin_lock lock; /* taken to claim a way, never to count */
	__u32 pad;
	struct ks_flow_way ways[KS_FLOW_WAYS];
};

/* What user space asks ks_flow_forget to remove (BPF_PROG_TEST_RUN data). */
struct ks_flow_forget_req {
	__u32 set;
	__u32 way;
	struct ks_flow_key key;
};

#endif
