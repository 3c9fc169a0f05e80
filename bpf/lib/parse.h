/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing and wire accounting shared by kubeshaper's programs
 * (shaper.c) and the wrapper of custom programs (custom.c), so that both
 * count a GSO skb's wire bytes the same way.
 */
#ifndef KUBESHAPER_LIB_PARSE_H
#define KUBESHAPER_LIB_PARSE_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "../shaper.h"

/* Header bytes assumed per segment when a GSO skb's headers cannot be
 * parsed (Ethernet + IPv4 + TCP with timestamps). */
#define KS_DEFAULT_HDR 66

/* What the parser found in a packet's headers. */
struct ks_pkt {
	struct ks_flow_key fk; /* proto == 0: not IP */
	__u32 hdr_len;         /* L2+L3+L4 header bytes, for GSO accounting */
	__u16 l4_off;          /* where the L4 header starts */
	__u8 tcp_flags;
	__u8 ports;            /* 1: sport and dport were read (TCP, UDP, SCTP) */
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
	p->l4_off = sizeof(*eth) + l3;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + sizeof(*eth) + l3;

		if ((void *)(tcp + 1) > end)
			return;
		p->fk.sport = tcp->source;
		p->fk.dport = tcp->dest;
		p->ports = 1;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->hdr_len = sizeof(*eth) + l3 + tcp->doff * 4;
	} else if (proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		/* SCTP's common header starts with the ports too. */
		struct udphdr *udp = data + sizeof(*eth) + l3;

		if ((void *)(udp + 1) > end)
			return;
		p->fk.sport = udp->source;
		p->fk.dport = udp->dest;
		p->ports = 1;
		p->hdr_len = sizeof(*eth) + l3 + (proto == IPPROTO_UDP ? sizeof(*udp) : 12);
	} else {
		p->hdr_len = sizeof(*eth) + l3;
	}
}

/*
 * The packet's size on the wire: a GSO skb is gso_segs segments, each with
 * its own copy of the headers (parsed from the head when p is given, else
 * parsed here). *segs gets the segment count (at least 1).
 */
static __always_inline __u64 ks_wire(struct __sk_buff *skb, struct ks_pkt *p,
				     __u32 *segs)
{
	__u32 n = skb->gso_segs;
	__u64 wire = skb->len;

	if (n > 1) {
		if (!p->hdr_len)
			parse(skb, p);
		wire += (__u64)(n - 1) * p->hdr_len;
	} else {
		n = 1;
	}
	*segs = n;
	return wire;
}

#endif
