// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Example custom program for kubeshaper.io/program: drops TCP and UDP
 * packets whose destination port is PORT.
 *
 *   kubeshaper.io/program: "drop_port egress PORT=5432"
 *   kubeshaper.io/program: "drop_port ingress PORT=53 PROTO=17 PERCENT=20"
 *
 * Custom programs are ordinary cls_bpf direct-action programs with one
 * SEC("tc") function. They run after kubeshaper's own program on the same
 * hook of the pod's host veth; what they drop (TC_ACT_SHOT) is counted
 * under reason "program". Return TC_ACT_UNSPEC to let a packet go on.
 * Parameters are volatile const globals, set from NAME=value at load time.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

volatile const __u16 PORT = 0;      /* destination port; 0 drops nothing */
volatile const __u8 PROTO = 0;      /* 6 (TCP), 17 (UDP); 0: both */
volatile const __u32 PERCENT = 100; /* share of matching packets dropped */

SEC("tc")
int drop_port(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 l3 = sizeof(*eth);
	__u8 proto;
	__u16 *ports;

	if (!PORT || (void *)(eth + 1) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l3;

		if ((void *)(ip + 1) > end || (ip->frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		proto = ip->protocol;
		l3 += ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l3;

		if ((void *)(ip6 + 1) > end)
			return TC_ACT_UNSPEC;
		proto = ip6->nexthdr;
		l3 += sizeof(*ip6);
	} else {
		return TC_ACT_UNSPEC;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	if (PROTO && proto != PROTO)
		return TC_ACT_UNSPEC;
	if (l3 > 14 + 60)
		return TC_ACT_UNSPEC;
	ports = data + l3;
	if ((void *)(ports + 2) > end)
		return TC_ACT_UNSPEC;
	if (ports[1] != bpf_htons(PORT))
		return TC_ACT_UNSPEC;
	if (PERCENT < 100 && bpf_get_prandom_u32() % 100 >= PERCENT)
		return TC_ACT_UNSPEC;
	return TC_ACT_SHOT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
