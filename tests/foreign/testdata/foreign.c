// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * "Another tool's" TC programs for kubeshaper's coexistence tests and
 * bench-cni: what eBPF CNIs put on a pod's veth. Each ends the hook (or
 * not) the way a CNI's program does; none knows kubeshaper.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Where the redirecting programs send packets. */
volatile const __u32 redir_ifindex = 0;
/* Ethernet addresses a peer redirect writes (the target pod's eth0, the
 * node's end of its veth): the pod's stack drops frames not for it. */
volatile const __u8 dst_mac[ETH_ALEN] = {};
volatile const __u8 src_mac[ETH_ALEN] = {};

/* Counts the packets each program saw, for the tests. */
__u64 seen = 0;

/* Cilium's cil_from_container with nothing to do: pass, end the hook. */
SEC("tc")
int foreign_ok(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&seen, 1);
	return TC_ACT_OK;
}

/* A well-behaved neighbour: TCX_NEXT. */
SEC("tc")
int foreign_next(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&seen, 1);
	return TC_ACT_UNSPEC;
}

/*
 * IPv4 only (ARP and the rest go to the stack, as a CNI answers them
 * itself): the target pod's Ethernet addresses written, as routing would.
 * Returns 0 to redirect.
 */
static __always_inline int readdress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 macs[2 * ETH_ALEN];

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	for (int i = 0; i < ETH_ALEN; i++) {
		macs[i] = dst_mac[i];
		macs[ETH_ALEN + i] = src_mac[i];
	}
	return bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) ? -1 : 0;
}

/* Deliver to another device's egress (a CNI's direct routing to the
 * destination pod's veth): TC_ACT_REDIRECT. */
SEC("tc")
int foreign_redir(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&seen, 1);
	if (readdress(skb))
		return TC_ACT_OK;
	return bpf_redirect(redir_ifindex, 0);
}

/* BPF host routing: straight into the destination pod's netns, past its
 * host veth's tc egress (bpf_redirect_peer, tc ingress only). */
SEC("tc")
int foreign_peer(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&seen, 1);
	if (readdress(skb))
		return TC_ACT_OK;
	return bpf_redirect_peer(redir_ifindex, 0);
}

char __license[] SEC("license") = "Dual BSD/GPL";
