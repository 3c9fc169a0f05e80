/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cooperative pacing (issue 13): a sock_ops program, attached at the cgroup
 * v2 root with BPF_F_ALLOW_MULTI so that it sees every TCP socket of the
 * node (every pod's) beside other tools' sock_ops, sets SO_MAX_PACING_RATE
 * on the sockets a bandwidth rule covers. TCP then paces itself (internal
 * pacing, Linux >= 4.13, no fq needed) at a rate that fits under the drop
 * policer, which stays the hard cap for everything that does not cooperate.
 *
 * A socket is covered by the egress rule of its local address (the pod
 * sends; the socket must live in the pod's netns) and by the ingress rule
 * of its remote address (a sender on this node sending to a pod: the
 * socket must live in a netns of this node, ksp_node_netns); with both,
 * the lower share wins. Matching network namespaces, not addresses alone,
 * keeps two "nodes" on one kernel (tests, kind) from pacing each other's
 * pods that happen to share an address. A rule's rate is
 * shared by its ACTIVE flows: a flow is active in an epoch (2^27 ns, 134 ms)
 * when it got an ACK for new data in it (the RTT callback), so an idle
 * keep-alive connection takes no share, and a finished flow gives its share
 * back within two epochs. Each socket re-derives its share on every RTT
 * callback and calls bpf_setsockopt only when the value changes: nothing
 * runs per packet on the TC path.
 *
 * Rates are wire (L2) bytes, what the policer counts; TCP paces payload
 * bytes (skb->len of its GSO skbs, headers excluded), so the share is scaled
 * by mss / (mss + TCP header + IP header + Ethernet header).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "sockpace.h"

#define SOL_SOCKET 1
#define SO_MAX_PACING_RATE 47
#define AF_INET 2
#define AF_INET6 10
#define ETH_HLEN 14

/* Epoch length: 2^27 ns = 134 ms. An active flow at the smallest share
 * (10 Mbit/s / 8 flows) gets an ACK every ~20 ms: it is never missed. */
#define KSP_EPOCH_SHIFT 27

/* Written by user space (pkg/sockpace), read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ksp_key);
	__type(value, struct ksp_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_rules SEC(".maps");

/* The network namespaces of this node (its pods', its own), by cookie:
 * where same-node senders live. Value: the host veth of the pod (0: the
 * node's own netns). Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_node_netns SEC(".maps");

/* Active-flow accounting per (address, direction); written here only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ksp_group_key);
	__type(value, struct ksp_group);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_groups SEC(".maps");

/* Per-socket state, freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ksp_sock);
} ksp_socks SEC(".maps");

/* What the program did, for status and tests (ksp_stat indexes). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_stats SEC(".maps");

/* bpf2go emits Go types for these. */
const struct ksp_key *ksp_unused_key __attribute__((unused));
const struct ksp_rule *ksp_unused_rule __attribute__((unused));
const struct ksp_group_key *ksp_unused_gkey __attribute__((unused));
const struct ksp_group *ksp_unused_group __attribute__((unused));
const enum ksp_stat ksp_unused_stat __attribute__((unused));

/* Only the fields read here; CO-RE finds them in the running kernel. */
struct sock___ksp {
	unsigned long sk_max_pacing_rate;
} __attribute__((preserve_access_index));

struct tcp_sock___ksp {
	__u16 tcp_header_len;
} __attribute__((preserve_access_index));

static __always_inline void stat(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&ksp_stats, &i);
	if (v)
		*v += 1;
}

/* addrs_of fills the socket's local and remote addresses, IPv4 as
 * v4-mapped IPv6. Each context field is read at a constant offset: the
 * verifier refuses a context pointer the compiler has offset. */
/* A context field read as one instruction at a constant offset: plain C
 * lets the compiler merge loads of different fields behind a computed
 * pointer, which the verifier refuses for the context. */
#define CTX(f) ({ \
	__u32 __v; \
	asm volatile("%0 = *(u32 *)(%1 + %2)" : "=r"(__v) : "r"(skops), "i"(__builtin_offsetof(struct bpf_sock_ops, f))); \
	__v; })

static __always_inline int addrs_of(struct bpf_sock_ops *skops, struct ksp_key *l, struct ksp_key *r)
{
	__builtin_memset(l, 0, sizeof(*l));
	__builtin_memset(r, 0, sizeof(*r));
	if (skops->family == AF_INET) {
		l->addr[2] = bpf_htonl(0xffff);
		r->addr[2] = bpf_htonl(0xffff);
		l->addr[3] = CTX(local_ip4);
		r->addr[3] = CTX(remote_ip4);
		return 0;
	}
	if (skops->family == AF_INET6) {
		l->addr[0] = CTX(local_ip6[0]);
		l->addr[1] = CTX(local_ip6[1]);
		l->addr[2] = CTX(local_ip6[2]);
		l->addr[3] = CTX(local_ip6[3]);
		r->addr[0] = CTX(remote_ip6[0]);
		r->addr[1] = CTX(remote_ip6[1]);
		r->addr[2] = CTX(remote_ip6[2]);
		r->addr[3] = CTX(remote_ip6[3]);
		return 0;
	}
	return -1;
}

/* active counts the socket as active in its group's current epoch and
 * returns the group's number of active flows (this epoch's or the last
 * one's, whichever is larger: a new epoch fills up as flows get ACKs). */
static __always_inline __u32 active(struct ksp_key *a, __u32 dir, __u32 *sock_epoch, __u32 now)
{
	struct ksp_group_key gk = {.addr = *a, .dir = dir};
	struct ksp_group *g = bpf_map_lookup_elem(&ksp_groups, &gk);
	__u32 n;

	if (!g) {
		struct ksp_group zero = {};
		bpf_map_update_elem(&ksp_groups, &gk, &zero, BPF_NOEXIST);
		g = bpf_map_lookup_elem(&ksp_groups, &gk);
		if (!g)
			return 1;
	}
	bpf_spin_lock(&g->lock);
	if (g->epoch != now) {
		g->prev = g->epoch + 1 == now ? g->cur : 0;
		g->cur = 0;
		g->epoch = now;
	}
	if (*sock_epoch != now) {
		g->cur++;
		*sock_epoch = now;
	}
	n = g->cur > g->prev ? g->cur : g->prev;
	bpf_spin_unlock(&g->lock);
	return n ? n : 1;
}

/* share is the socket's wire rate in bytes/s: the lowest of its rules'
 * rate / active flows; 0 when no rule covers it. */
static __always_inline __u64 share(struct bpf_sock_ops *skops, struct ksp_sock *s)
{
	__u32 now = bpf_ktime_get_ns() >> KSP_EPOCH_SHIFT;
	__u64 netns = bpf_get_netns_cookie(skops);
	struct ksp_key local, remote;
	struct ksp_rule *r;
	__u64 best = 0, v;

	if (addrs_of(skops, &local, &remote))
		return 0;
	r = bpf_map_lookup_elem(&ksp_rules, &local);
	if (r && r->rate[KSP_DIR_EGRESS] && r->netns == netns) {
		v = r->rate[KSP_DIR_EGRESS] / active(&local, KSP_DIR_EGRESS, &s->epoch[KSP_DIR_EGRESS], now);
		best = v;
	}
	r = bpf_map_lookup_elem(&ksp_rules, &remote);
	if (r && r->rate[KSP_DIR_INGRESS] && bpf_map_lookup_elem(&ksp_node_netns, &netns)) {
		v = r->rate[KSP_DIR_INGRESS] / active(&remote, KSP_DIR_INGRESS, &s->epoch[KSP_DIR_INGRESS], now);
		if (!best || v < best)
			best = v;
	}
	return best;
}

/* payload converts a wire rate to the payload rate TCP paces: per segment
 * of mss payload bytes the wire carries mss + TCP + IP + Ethernet headers. */
static __always_inline __u64 payload(struct bpf_sock_ops *skops, struct bpf_sock *sk, __u64 wire)
{
	__u32 mss = skops->mss_cache, tcph = 32; /* 20 + timestamps */
	__u32 iph = skops->family == AF_INET6 ? 40 : 20;
	struct tcp_sock___ksp *tp = NULL;

	tp = (struct tcp_sock___ksp *)bpf_skc_to_tcp_sock(sk);
	if (tp)
		tcph = tp->tcp_header_len;
	if (mss < 64 || mss > 65535)
		mss = 1448;
	if (tcph < 20 || tcph > 60)
		tcph = 32;
	return wire * mss / (mss + tcph + iph + ETH_HLEN);
}

/* current is the socket's max pacing rate as set now (by us or by the
 * application); ~0 when unset or unreadable. */
static __always_inline __u64 current(struct bpf_sock *sk)
{
	struct sock___ksp *s = (struct sock___ksp *)bpf_skc_to_tcp_sock(sk);

	if (!s)
		return ~0ULL;
	return s->sk_max_pacing_rate;
}

static __always_inline int set_rate(struct bpf_sock_ops *skops, __u64 rate)
{
	/* The option takes an int (bytes/s; ~0U = unlimited). */
	int v = rate >= 0xffffffffULL ? (int)~0U : (int)(__u32)rate;

	return bpf_setsockopt(skops, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof(v));
}

static __always_inline void update(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct ksp_sock *s)
{
	/* Counted active whatever happens next: an application pacing itself
	 * still takes its part of the pod's rate. */
	__u64 want = share(skops, s), cur;

	if (s->app)
		return;
	cur = current(sk);
	if (want) {
		want = payload(skops, sk, want);
		if (!want)
			want = 1;
	}
	if (!s->rate) {
		/* Set by the application before we saw the socket, and no
		 * higher than the pod's share: its own choice, never raised. */
		if (cur != ~0ULL && want && cur <= want) {
			s->app = 1;
			stat(KSP_STAT_APP_OWNED);
			return;
		}
		if (!want)
			return;
	} else if (cur != s->rate) {
		/* Changed by the application since we set it: its choice
		 * (lower: never raised; higher: the policer is the cap). */
		s->app = 1;
		stat(KSP_STAT_APP_OWNED);
		return;
	}
	if (!want) {
		/* The rule went: lift what we set. */
		set_rate(skops, ~0ULL);
		s->rate = 0;
		stat(KSP_STAT_LIFTED);
		return;
	}
	if (want == s->rate)
		return;
	if (set_rate(skops, want)) {
		stat(KSP_STAT_SET_ERROR);
		return;
	}
	if (!s->rate)
		stat(KSP_STAT_PACED);
	s->rate = want;
	stat(KSP_STAT_UPDATES);
}

SEC("sockops")
int ks_sockpace(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;
	struct ksp_sock *s;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct ksp_sock zero = {};

		sk = skops->sk;
		if (!sk)
			return 1;
		if (!share(skops, &zero))
			return 1; /* not ours: no state, no callbacks */
		s = bpf_sk_storage_get(&ksp_socks, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			return 1;
		/* The flow counted itself above in zero's epochs. */
		s->epoch[0] = zero.epoch[0];
		s->epoch[1] = zero.epoch[1];
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG);
		update(skops, sk, s);
		return 1;
	}
	case BPF_SOCK_OPS_RTT_CB:
		sk = skops->sk;
		if (!sk)
			return 1;
		s = bpf_sk_storage_get(&ksp_socks, sk, NULL, 0);
		if (s)
			update(skops, sk, s);
		return 1;
	}
	return 1;
}

char __license[] SEC("license") = "Dual BSD/GPL";
