/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types of the cooperative-pacing sock_ops program (bpf/sockpace.c),
 * mirrored by Go structs bpf2go generates (pkg/sockpace).
 */
#ifndef KUBESHAPER_SOCKPACE_H
#define KUBESHAPER_SOCKPACE_H

#include <linux/types.h>

enum ksp_dir {
	KSP_DIR_EGRESS = 0,  /* the pod sends: its sockets' local address */
	KSP_DIR_INGRESS = 1, /* the pod receives: same-node senders' remote address */
};

/* A pod address: IPv6, or IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d),
 * network byte order. */
struct ksp_key {
	__u32 addr[4];
};

struct ksp_rule {
	__u64 rate[2];   /* wire bytes/s per ksp_dir; 0 = no limit */
	__u64 netns;     /* the pod's netns cookie: its egress rule applies to
			  * sockets of that netns only */
	__u32 ifindex;   /* the host veth whose rule this is (cleared with it) */
	__u32 pad;
};

struct ksp_group_key {
	struct ksp_key addr;
	__u32 dir;
};

/* Shares by need (bpf/sockpace.c): per (address, direction), the flows
 * that count for a full share ("heavy"), the others ("light") and the
 * bytes these got acked, in the current and the previous epoch. */
struct ksp_group {
	struct bpf_spin_lock lock;
	__u32 epoch;      /* current epoch (ns >> 27) */
	__u32 cur;        /* heavy flows in it so far */
	__u32 prev;       /* heavy flows in the previous one */
	__u32 cur_nlight; /* light flows in it so far */
	__u32 prev_nlight; /* light flows in the previous one */
	__u32 pad;
	__u64 cur_light;  /* bytes acked to light flows in it so far */
	__u64 prev_light; /* bytes acked to light flows in the previous one */
};

struct ksp_sock {
	__u64 rate;      /* SO_MAX_PACING_RATE we set (payload bytes/s); 0 none */
	__u64 last;      /* bytes_acked at the last callback */
	__u64 base;      /* bytes_acked when epoch ep began */
	__u64 prev;      /* bytes acked in epoch ep - 1 */
	__u32 ep;        /* the epoch base and prev refer to */
	__u32 epoch[2];  /* last epoch counted heavy in each group */
	__u32 light[2];  /* bytes added to each group's cur_light in epoch ep */
	__u32 plight[2]; /* ... and to its prev_light (epoch ep - 1) */
	__u32 lep[2];    /* last epoch counted in each group's cur_nlight */
	__u32 lprev[2];  /* the one before (counted in prev_nlight if ep - 1) */
	__u64 pay_end;   /* end of the start debt's payback (ns); 0: not begun */
	__u32 app;       /* the application set its own, lower rate: hands off */
	__u32 clamp;     /* TCP_BPF_SNDCWND_CLAMP we set (segments); 0 none */
};

enum ksp_stat {
	KSP_STAT_PACED = 0,     /* sockets given a pacing rate */
	KSP_STAT_UPDATES = 1,   /* setsockopt calls (rate changes) */
	KSP_STAT_APP_OWNED = 2, /* sockets left alone: the application's lower rate */
	KSP_STAT_LIFTED = 3,    /* sockets whose rule went: pacing lifted */
	KSP_STAT_SET_ERROR = 4, /* bpf_setsockopt failed */
	KSP_STAT_MAX = 8,
};

#endif
