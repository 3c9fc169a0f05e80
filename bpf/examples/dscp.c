// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Example custom program for kubeshaper.io/program: marks IPv4 and IPv6
 * packets with a DSCP (the upper six bits of the TOS / traffic class),
 * keeping the ECN bits; IPv4's header checksum is updated.
 *
 *   kubeshaper.io/program: "dscp egress DSCP=46"       (EF)
 *   kubeshaper.io/program: "dscp egress DSCP=10 PORT=443"
 *
 * See drop_port.c for how custom programs are written and run.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

volatile const __u8 DSCP = 0;  /* 0..63 */
volatile const __u16 PORT = 0; /* only TCP/UDP to this destination port; 0: all */

static __always_inline int port_matches(struct __sk_buff *skb, __u32 l4, __u8 proto)
{
	__u16 dport;

	if (!PORT)
		return 1;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, l4 + 2, &dport, 2))
		return 0;
	return dport == bpf_htons(PORT);
}

SEC("tc")
int dscp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 dscp = DSCP & 0x3f;

	if ((void *)(eth + 1) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u8 old, new;

		if ((void *)(ip + 1) > end)
			return TC_ACT_UNSPEC;
		if (!port_matches(skb, sizeof(*eth) + ip->ihl * 4, ip->protocol))
			return TC_ACT_UNSPEC;
		/* The helpers below may move the packet: reload pointers. */
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		ip = data + sizeof(*eth);
		if ((void *)(ip + 1) > end)
			return TC_ACT_UNSPEC;
		old = ip->tos;
		new = (dscp << 2) | (old & 0x3);
		if (old == new)
			return TC_ACT_UNSPEC;
		bpf_l3_csum_replace(skb, sizeof(*eth) + offsetof(struct iphdr, check),
				    bpf_htons(old), bpf_htons(new), 2);
		bpf_skb_store_bytes(skb, sizeof(*eth) + offsetof(struct iphdr, tos), &new, 1, 0);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u16 old, new;

		if ((void *)(ip6 + 1) > end)
			return TC_ACT_UNSPEC;
		if (!port_matches(skb, sizeof(*eth) + sizeof(*ip6), ip6->nexthdr))
			return TC_ACT_UNSPEC;
		if (bpf_skb_load_bytes(skb, sizeof(*eth), &old, 2))
			return TC_ACT_UNSPEC;
		/* version(4) | traffic class(8) | flow label(4 of 20) */
		new = bpf_htons((bpf_ntohs(old) & 0xf03f) | ((__u16)dscp << 6));
		if (old != new)
			bpf_skb_store_bytes(skb, sizeof(*eth), &new, 2, 0);
	}
	return TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
