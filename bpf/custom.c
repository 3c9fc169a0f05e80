// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The wrapper a custom program (kubeshaper.io/program) runs in. The agent
 * loads one instance per {pod, direction}: this program with the body of
 * ks_custom_main replaced, instruction for instruction, by the custom
 * program's own (pkg/datapath/custom.go). It is attached behind kubeshaper's
 * own filter on the same hook (tc priority 2), and counts what the custom
 * program drops under reason "program".
 *
 * Why a wrapper and not the alternatives, on kernels 5.10 and later:
 *  - fexit on the custom program sees its verdict, but tracing a BPF
 *    program needs BTF in the custom object, a second program and link per
 *    instance, and reading the skb's length through the kernel's BTF;
 *  - a tail call from kubeshaper's program never returns: the verdict
 *    cannot be counted, and counting before the call cannot know it;
 *  - a counting filter after the custom one cannot tell a drop from
 *    TC_ACT_OK, which also ends classification.
 * A bpf-to-bpf call needs none of that: the custom program's verdict comes
 * back here, and the verifier checks both together as one program.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "shaper.h"
#include "lib/parse.h"
/* The agent's slot table and counters (lib/slots.h), replaced by the
 * pinned maps at load time. */
#define KS_SLOTS_ONE_FUNCTION
#include "lib/slots.h"

/* What the compiler may not see through: the placeholder's result. */
volatile int ks_custom_placeholder = TC_ACT_UNSPEC;

/*
 * Replaced by the custom program at load time. Global and noinline, so the
 * compiler keeps the call and assumes nothing of its result.
 */
__attribute__((noinline)) int ks_custom_main(struct __sk_buff *skb)
{
	return ks_custom_placeholder + (int)(skb->len & 0);
}

static __always_inline int run_custom(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex, segs, idx;
	struct ks_pkt p = {};
	struct ks_counters *c;
	__u64 wire;
	__s64 i;
	int verdict;

	/* Read before the custom program runs: it may change the packet. */
	wire = ks_wire(skb, &p, &segs);
	verdict = ks_custom_main(skb);
	if (verdict != TC_ACT_SHOT)
		return verdict;
	i = ks_index_of(ifindex, dir);
	if (i < 0)
		return TC_ACT_SHOT;
	idx = i;
	c = bpf_map_lookup_elem(&ks_stats, &idx);
	ks_count_drop(c, KS_REASON_PROGRAM, wire, segs);
	return TC_ACT_SHOT;
}

/* At the host veth's tc ingress: what the pod sends. */
SEC("tc")
int ks_custom_egress(struct __sk_buff *skb)
{
	return run_custom(skb, KS_DIR_EGRESS);
}

/* At the host veth's tc egress: what the pod receives. */
SEC("tc")
int ks_custom_ingress(struct __sk_buff *skb)
{
	return run_custom(skb, KS_DIR_INGRESS);
}

char __license[] SEC("license") = "Dual BSD/GPL";
