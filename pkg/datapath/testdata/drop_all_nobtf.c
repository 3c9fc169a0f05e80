// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A custom program compiled without BTF (-g0): drops every IPv4 packet.
 * Used by TestCustomProgramWithoutBTF. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int is_ipv4(struct __sk_buff *skb)
{
	return skb->protocol == bpf_htons(ETH_P_IP);
}

SEC("tc")
int drop_all(struct __sk_buff *skb)
{
	return is_ipv4(skb) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
