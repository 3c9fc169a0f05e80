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
 * pods that happen to share an address.
 *
 * SHARES BY NEED. A rule's rate is split among its flows in proportion to
 * need, in epochs of 2^27 ns (134 ms):
 *  - a flow is HEAVY in an epoch once the bytes acked to it in that epoch,
 *    or in the previous one, or the bytes its application has written and
 *    not had acked yet (its backlog: a bulk sender's fills the send
 *    buffer), reach a quarter of an epoch at its share (share >> 5 bytes:
 *    1/32 s ~ 23 % of 134 ms); else it is LIGHT;
 *  - heavy flows split what light flows leave: share = (rate - light) /
 *    heavy, where light is the light flows' acked bytes per epoch turned
 *    into a rate (deducted up to 3/4 of the rule, so that heavy flows keep
 *    at least a quarter whatever the estimate says), and heavy and light
 *    are the larger of this epoch's count so far and the last epoch's (a
 *    new epoch fills up as flows get ACKs; a finished flow gives its share
 *    back within two epochs);
 *  - a light flow is paced at the lower of that share and an equal share
 *    among all the flows that had a callback in this epoch or the last,
 *    heavy or light: rate / (heavy + light). A flow is counted light from
 *    its first callback (connection established), so flows that start
 *    together start at an equal share each, and a light flow that turns
 *    bulk never runs above the rule's rate; it turns heavy at its first
 *    ACK (backlog) or within ~31 ms at its share (acked bytes).
 * Why: a node has short connections to every pod all the time (kubelet
 * probes every second, metrics scrapes, health checks, keep-alive
 * requests). When any flow that got an ACK counted for a full share, each
 * probe halved the bulk flow's rate for one or two epochs: on a real
 * cluster, goodput 0.85 of the target with probes every second, ~0.45 with
 * one every 100 ms (pkg/shaper TestSocketPacingWithProbes). Counted by
 * need, a probe is a few hundred bytes deducted, the bulk flow keeps its
 * rate; the probe itself is paced at rate / (heavy + light), which it
 * never uses. Why light flows are not paced at the heavy share (as they
 * were): flows that start together are all light until their acked bytes
 * reach a quarter epoch at the share (at 1G: 3.9 MB, ~31 ms, more than
 * their backlog), and each ran at the full rule meanwhile — the first
 * second with 8 streams was 1.06-1.07x the target at 1G and 1.07x at 50M
 * (tools/bench, pacing section); paced at rate / flows: 0.99-1.00x.
 * Light bytes are deducted after they are acked, so the sum of the flows
 * can still run above the rule for an epoch when a light flow turns bulk
 * beside heavy ones; the policer's bucket (rate x 500 ms) absorbs that,
 * and stays the hard cap.
 * A heavy flow must get an ACK every epoch to stay counted: below 52
 * Mbit/s per socket its bursts are bounded (clamp_cwnd) so that it does.
 * Each socket re-derives its share on every RTT callback (an ACK for new
 * data) and calls bpf_setsockopt only when the value changes: nothing runs
 * per packet on the TC path.
 *
 * START DEBT. Linux does not pace a socket's first 10 data segments
 * (tcp_update_skb_after_send paces from data_segs_out >= 10, as sch_fq's
 * initial quantum), and the skb that crosses them leaves at once too: a
 * flow starts about one initial window (10 segments) ahead of its share,
 * more when its share fell since its last ACK (flows that connect one
 * after the other each start at a larger share: rate / flows so far). At
 * 10M over 8 flows that is 8 x 10 x 1514 B = 121 KB, 9.7 % of a second,
 * and the policer's bucket, full when the rule is older than the flows,
 * passes it: the first second was 1.12x the target. A smaller initial
 * window does not help (TCP_BPF_IW 2 at connection: 1.09x, the same as
 * without it — the 10 unpaced segments then leave in a few round trips
 * of ~30 us). So each flow pays the debt back: from the ACK that ends its
 * unpaced start, for 2^29 ns (537 ms), its share is lowered by 10 of its
 * wire segments over that time (at most by half): first second
 * 0.976-0.994x at 10M, 50M and 1G, 1 and 8 streams, egress and ingress
 * (one 5 s run each; 0.99-1.00x before with 1 stream). The
 * cost: a new flow's first half second at 0.82 of its share at 10M over 8
 * flows (1.25 Mbit/s each), 0.98 at 10M alone, nothing measurable at 1G.
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
#define SOL_TCP 6
#define TCP_BPF_SNDCWND_CLAMP 1002
#define KSP_NO_CLAMP 0x7fffffff /* TCP's own default ssthresh */

/* Below this payload rate (6.5 MB/s, 52 Mbit/s) a 64 KB TSO burst lasts
 * more than 10 ms at the rate: the congestion window is clamped. */
#define KSP_CLAMP_BELOW (65536ULL * 100)

/* Epoch length: 2^27 ns = 134 ms. A heavy flow at the smallest share
 * (10 Mbit/s / 8 flows) gets an ACK every ~20 ms: it is never missed. */
#define KSP_EPOCH_SHIFT 27

/* The three hash maps are sized for the node by pkg/sockpace (Open,
 * SizesForPods: the max_entries here are placeholders) and allocate their
 * entries as they are added: an empty one holds its buckets only. A group
 * entry is created here once per paced address and direction, at its
 * first flow, not per flow (pkg/sockpace/maps.go, issue 12). */

/* Written by user space (pkg/sockpace), read here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct ksp_key);
	__type(value, struct ksp_rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_rules SEC(".maps");

/* The network namespaces of this node (its pods', its own), by cookie:
 * where same-node senders live. Value: the host veth of the pod (0: the
 * node's own netns). Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_node_netns SEC(".maps");

/* Active-flow accounting per (address, direction); written here only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 64);
	__type(key, struct ksp_group_key);
	__type(value, struct ksp_group);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ksp_groups SEC(".maps");

/* Per-socket state, freed with the socket. Pinned, so that a new agent's
 * program, swapped in on the same link, goes on with the sockets paced
 * before it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ksp_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
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
	__u32 write_seq;
	__u32 snd_una;
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

/* Light bytes per epoch to bytes/s: x 1e9 / 2^27 = x 7.4506 ~ x 954 / 128. */
#define KSP_PER_SEC(b) (((b) * 954) >> 7)

/* split is a rule's wire rate per heavy flow: what light flows leave
 * (at least a quarter of the rule), over the heavy flows (at least one). */
static __always_inline __u64 split(__u64 rate, __u32 cur, __u32 prev, __u64 cur_light, __u64 prev_light)
{
	__u32 n = cur > prev ? cur : prev;
	__u64 light = KSP_PER_SEC(cur_light > prev_light ? cur_light : prev_light);

	if (light > rate - rate / 4)
		light = rate - rate / 4;
	return (rate - light) / (n ? n : 1);
}

/* light_share is a rule's wire rate per flow when every flow of the
 * group, heavy or light, counts (at least one). */
static __always_inline __u64 light_share(__u64 rate, struct ksp_group *g)
{
	__u32 n = (g->cur > g->prev ? g->cur : g->prev) +
		  (g->cur_nlight > g->prev_nlight ? g->cur_nlight : g->prev_nlight);

	return rate / (n ? n : 1);
}

/* need accounts the socket in its group of direction dir (its acked
 * bytes, this epoch so far: cur; in the previous epoch: s->prev; since
 * the last callback: fresh; written by the application and not acked
 * yet: backlog) and returns the flow's share in wire bytes/s: the heavy
 * flows' split, or for a light flow the lower of that and an equal
 * share among all flows. Shares by need: see the top of the file. */
static __always_inline __u64 need(struct ksp_key *a, __u32 dir, __u64 rate, struct ksp_sock *s,
				  __u32 now, __u64 cur, __u64 fresh, __u64 backlog)
{
	struct ksp_group_key gk = {.addr = *a, .dir = dir};
	struct ksp_group *g = bpf_map_lookup_elem(&ksp_groups, &gk);
	__u64 v, p;

	if (!g) {
		struct ksp_group zero = {};
		bpf_map_update_elem(&ksp_groups, &gk, &zero, BPF_NOEXIST);
		g = bpf_map_lookup_elem(&ksp_groups, &gk);
		if (!g)
			return rate;
	}
	bpf_spin_lock(&g->lock);
	if (g->epoch != now) {
		if (g->epoch + 1 == now) {
			g->prev = g->cur;
			g->prev_light = g->cur_light;
			g->prev_nlight = g->cur_nlight;
		} else {
			g->prev = 0;
			g->prev_light = 0;
			g->prev_nlight = 0;
		}
		g->cur = 0;
		g->cur_light = 0;
		g->cur_nlight = 0;
		g->epoch = now;
	}
	if (s->epoch[dir] != now) {
		__u64 t;

		/* Counted light (first), so that its own share counts it. */
		if (s->lep[dir] != now) {
			s->lprev[dir] = s->lep[dir];
			s->lep[dir] = now;
			g->cur_nlight++;
		}
		v = split(rate, g->cur, g->prev, g->cur_light, g->prev_light);
		p = light_share(rate, g);
		t = (p < v ? p : v) >> 5; /* a quarter epoch at the share, in bytes */
		if (cur >= t || s->prev >= t || backlog >= t) {
			/* Heavy: counts for a share; its light count and what
			 * it added as light this epoch and the last are taken
			 * back. */
			g->cur++;
			if (g->cur_nlight)
				g->cur_nlight--;
			if (s->lprev[dir] + 1 == now && g->prev_nlight)
				g->prev_nlight--;
			s->lep[dir] = 0;
			s->lprev[dir] = 0;
			g->cur_light -= s->light[dir] < g->cur_light ? s->light[dir] : g->cur_light;
			g->prev_light -= s->plight[dir] < g->prev_light ? s->plight[dir] : g->prev_light;
			s->light[dir] = 0;
			s->plight[dir] = 0;
			s->epoch[dir] = now;
		} else if (fresh) {
			g->cur_light += fresh;
			s->light[dir] += fresh;
		}
	}
	v = split(rate, g->cur, g->prev, g->cur_light, g->prev_light);
	if (s->epoch[dir] != now) {
		p = light_share(rate, g);
		if (p < v)
			v = p;
	}
	bpf_spin_unlock(&g->lock);
	return v;
}

/* rule_rates looks up the rules that cover the socket: its egress rule (by
 * local address, in the pod's netns) and the ingress rule of its remote
 * address (for a sender in a netns of this node). */
static __always_inline void rule_rates(struct bpf_sock_ops *skops, struct ksp_key *local, struct ksp_key *remote,
				       __u64 *egress, __u64 *ingress)
{
	__u64 netns = bpf_get_netns_cookie(skops);
	struct ksp_rule *r;

	*egress = 0;
	*ingress = 0;
	if (addrs_of(skops, local, remote))
		return;
	r = bpf_map_lookup_elem(&ksp_rules, local);
	if (r && r->rate[KSP_DIR_EGRESS] && r->netns == netns)
		*egress = r->rate[KSP_DIR_EGRESS];
	r = bpf_map_lookup_elem(&ksp_rules, remote);
	if (r && r->rate[KSP_DIR_INGRESS] && bpf_map_lookup_elem(&ksp_node_netns, &netns))
		*ingress = r->rate[KSP_DIR_INGRESS];
}

/* share is the socket's wire rate in bytes/s: the lowest of its rules'
 * shares; 0 when no rule covers it. */
static __always_inline __u64 share(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct ksp_sock *s)
{
	__u32 now = bpf_ktime_get_ns() >> KSP_EPOCH_SHIFT;
	__u64 acked = skops->bytes_acked, cur, fresh, backlog = 0;
	struct tcp_sock___ksp *tp = (struct tcp_sock___ksp *)bpf_skc_to_tcp_sock(sk);
	struct ksp_key local, remote;
	__u64 eg, in, best = 0, v;

	rule_rates(skops, &local, &remote, &eg, &in);
	if (tp)
		backlog = (__u32)(tp->write_seq - tp->snd_una);
	/* This epoch's bytes count from the last callback before it: the ACK
	 * that opens an epoch brings bytes of that epoch. */
	if (s->ep != now) {
		int last = s->ep + 1 == now;

		s->prev = last ? s->last - s->base : 0;
		s->plight[0] = last ? s->light[0] : 0;
		s->plight[1] = last ? s->light[1] : 0;
		s->light[0] = 0;
		s->light[1] = 0;
		s->base = s->last;
		s->ep = now;
	}
	if (acked < s->last) /* never seen; keeps the arithmetic sane */
		acked = s->last;
	cur = acked - s->base;
	fresh = acked - s->last;
	s->last = acked;
	if (eg)
		best = need(&local, KSP_DIR_EGRESS, eg, s, now, cur, fresh, backlog);
	if (in) {
		v = need(&remote, KSP_DIR_INGRESS, in, s, now, cur, fresh, backlog);
		if (!best || v < best)
			best = v;
	}
	return best;
}

/* seg_hdrs is the bytes the wire adds to each segment of *mss payload
 * bytes: TCP, IP and Ethernet headers. */
static __always_inline __u32 seg_hdrs(struct bpf_sock_ops *skops, struct bpf_sock *sk, __u32 *mss)
{
	__u32 tcph = 32; /* 20 + timestamps */
	__u32 iph = skops->family == AF_INET6 ? 40 : 20;
	struct tcp_sock___ksp *tp = NULL;

	*mss = skops->mss_cache;
	tp = (struct tcp_sock___ksp *)bpf_skc_to_tcp_sock(sk);
	if (tp)
		tcph = tp->tcp_header_len;
	if (*mss < 64 || *mss > 65535)
		*mss = 1448;
	if (tcph < 20 || tcph > 60)
		tcph = 32;
	return tcph + iph + ETH_HLEN;
}

/* payload converts a wire rate to the payload rate TCP paces: per segment
 * of mss payload bytes the wire carries mss + TCP + IP + Ethernet headers. */
static __always_inline __u64 payload(struct bpf_sock_ops *skops, struct bpf_sock *sk, __u64 wire)
{
	__u32 mss, h = seg_hdrs(skops, sk, &mss);

	return wire * mss / (mss + h);
}

/* Start debt (see the top of the file): the segments a flow sends ahead of
 * its share when it starts, paid back over 2^29 ns (537 ms) from the ACK
 * that ends TCP's unpaced start (its first 10 data segments). */
#define KSP_START_SEGS 10
#define KSP_PAY_SHIFT 29

/* pay lowers a flow's wire share while it pays back its start debt: by
 * the debt over the payback time, at most by half. */
static __always_inline __u64 pay(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct ksp_sock *s, __u64 wire)
{
	__u64 now = bpf_ktime_get_ns(), debt;
	__u32 mss, h = seg_hdrs(skops, sk, &mss);

	if (!s->pay_end) {
		if (skops->data_segs_out < 10)
			return wire;
		s->pay_end = now + (1ULL << KSP_PAY_SHIFT);
	}
	if (now >= s->pay_end)
		return wire;
	/* bytes per 2^29 ns as bytes/s: x 1e9 / 2^29 = x 1.8626 ~ x 1907 / 1024 */
	debt = ((__u64)KSP_START_SEGS * (mss + h) * 1907) >> 10;
	if (debt > wire / 2)
		debt = wire / 2;
	return wire - debt;
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

/* clamp_cwnd bounds the socket's bursts at low rates (rate: its payload
 * pacing rate; 0: lift). TCP paces a socket per skb: it sends one skb,
 * then waits skb->len / rate. On low-RTT paths (min RTT < 512 us: a veth,
 * a LAN) the kernel sizes TSO skbs at 64 KB whatever the rate
 * (tcp_tso_autosize), so a socket paced at 1.25 Mbit/s (10M over 8 flows)
 * sends 64 KB every 420 ms: 100 ms windows swing from 0 to 5x its rate,
 * bursts of several flows meet in the policer, and a flow can get no ACK
 * for whole epochs and so drop out of the count of heavy flows, which
 * raises the others' shares. TSO skbs are split at the congestion window:
 * a window of at most 10 segments (1/64 s at the rate, at least 2) keeps
 * bursts small, and it never limits the rate as long as it holds twice the
 * rate x smoothed RTT (it grows with the RTT at each ACK). Why 1/64 s:
 * with 1/16 s (6 segments at 1.25 Mbit/s, one every 58 ms) a 100 ms window
 * holds 1 or 2 skbs of each flow, and 8 flows at random phases swing the
 * windows by +-9 % (measured p5-p95 0.92-1.11 at 10M over 8 flows once
 * flows start at equal shares; an earlier build's phases happened to
 * interleave: 0.96-1.04); with 1/64 s (2 segments, one every 19 ms):
 * 0.98-1.02. Above 52 Mbit/s a 64 KB burst is under 10 ms: the window is
 * left alone. Setting the clamp also sets ssthresh: it is lowered only when
 * it halves. */
static __always_inline void clamp_cwnd(struct bpf_sock_ops *skops, struct ksp_sock *s, __u64 rate)
{
	__u32 mss = skops->mss_cache, want = 0;
	__u64 srtt = skops->srtt_us >> 3, rtt;
	int v;

	if (mss < 64 || mss > 65535)
		mss = 1448;
	if (rate && rate < KSP_CLAMP_BELOW) {
		want = (rate >> 6) / mss;
		if (want > 10)
			want = 10;
		if (want < 2)
			want = 2;
		rtt = 2 * rate * srtt / 1000000 / mss + 1;
		if (rtt > want)
			want = rtt > KSP_NO_CLAMP ? KSP_NO_CLAMP : rtt;
	} else if (s->clamp) {
		want = KSP_NO_CLAMP;
	}
	if (!want || want == s->clamp)
		return;
	if (s->clamp && want < s->clamp && want > s->clamp / 2)
		return;
	v = want;
	if (bpf_setsockopt(skops, SOL_TCP, TCP_BPF_SNDCWND_CLAMP, &v, sizeof(v))) {
		stat(KSP_STAT_SET_ERROR);
		return;
	}
	s->clamp = want == KSP_NO_CLAMP ? 0 : want;
}

static __always_inline void update(struct bpf_sock_ops *skops, struct bpf_sock *sk, struct ksp_sock *s)
{
	/* Accounted whatever happens next: an application pacing itself
	 * still takes its part of the pod's rate (heavy or light). */
	__u64 want = share(skops, sk, s), cur;

	if (s->app)
		return;
	cur = current(sk);
	if (want) {
		want = payload(skops, sk, pay(skops, sk, s, want));
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
		clamp_cwnd(skops, s, 0);
		stat(KSP_STAT_LIFTED);
		return;
	}
	if (want != s->rate) {
		if (set_rate(skops, want)) {
			stat(KSP_STAT_SET_ERROR);
			return;
		}
		if (!s->rate)
			stat(KSP_STAT_PACED);
		s->rate = want;
		stat(KSP_STAT_UPDATES);
	}
	clamp_cwnd(skops, s, want);
}

SEC("sockops")
int ks_sockpace(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;
	struct ksp_sock *s;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct ksp_key local, remote;
		__u64 eg, in;

		sk = skops->sk;
		if (!sk)
			return 1;
		rule_rates(skops, &local, &remote, &eg, &in);
		if (!eg && !in)
			return 1; /* not ours: no state, no callbacks */
		s = bpf_sk_storage_get(&ksp_socks, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			return 1;
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
