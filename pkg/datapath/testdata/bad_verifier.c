// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A custom program the verifier rejects: it reads the packet without a
 * bounds check. Used by TestCustomProgramVerifierRejection. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 OFFSET = 100;

SEC("tc")
int bad(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;

	return data[OFFSET] == 42 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
