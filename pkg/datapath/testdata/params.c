// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Parameters of every kind a custom program may declare; drops when
 * VERDICT says so. Used by TestCustomProgramParams. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

volatile const __u8 U8 = 0;
volatile const __s16 S16 = 0;
volatile const __u32 U32 = 0;
volatile const __s64 S64 = 0;
volatile const bool FLAG = false;
volatile const int VERDICT = TC_ACT_UNSPEC;
volatile const int KS_DIRECTION = -1;
__u32 WRITABLE = 0; /* not a parameter: .bss */

SEC("tc")
int params(struct __sk_buff *skb)
{
	WRITABLE++;
	if (U8 == 200 && S16 == -300 && U32 == 0xdeadbeef && S64 == -5000000000LL && FLAG &&
	    KS_DIRECTION == 1)
		return TC_ACT_SHOT;
	return VERDICT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
