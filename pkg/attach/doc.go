// Package attach puts kubeshaper's TC programs on interfaces and takes them
// off again, without disturbing anything another tool put there.
//
// Programs are cls_bpf filters in direct-action mode on a clsact qdisc, so
// `tc filter show dev <veth> ingress|egress` lists them by name. Every
// filter kubeshaper owns sits at one fixed slot per hook — priority
// FilterPriority, handle FilterHandle, chain 0, protocol all — and carries a
// name starting with NamePrefix. Both conditions must hold for kubeshaper
// to consider a filter its own: the slot makes re-attachment a replace (a
// new program FD swaps atomically, never a second filter), and the name
// keeps us from replacing or deleting a filter another tool happens to have
// put in the same slot.
//
// Root qdiscs (tbf for qdisc-backed rate limits, fq for EDT pacing) that
// kubeshaper installs carry the handle QdiscHandle ("KS:"); a root qdisc
// with any other handle is someone else's (or the kernel default, handle
// 0) and is never replaced or deleted.
//
// All functions act in the network namespace of the calling thread; enter
// another one with podnet.Do.
package attach

const (
	// NamePrefix starts the name of every filter kubeshaper attaches; a
	// crashed agent's leftovers are found by it (ListAllOurs).
	NamePrefix = "kubeshaper"

	// FilterPriority is the tc priority ("pref") of our filters: 1, the
	// first to run. Pod traffic must reach our program before anything
	// that could redirect or drop it (a CNI's own program ends processing
	// with its verdict), and since our program returns TC_ACT_UNSPEC for
	// packets it lets through, running first costs the later filters
	// nothing. Priority 1 is shared only with filters of the same kind and
	// protocol (cls_bpf, all): such a filter (Cilium's default slot is
	// prio 1 handle 1) keeps its own handle beside ours. Within one
	// priority cls_bpf runs the most recently added handle first, which
	// is also the order `tc filter show` lists them in.
	FilterPriority uint16 = 1

	// ProgramPriority is the slot of a custom program (kubeshaper.io/
	// program): the same handle, priority 2, right after kubeshaper's own
	// filter, which passes on what it lets through (TC_ACT_UNSPEC).
	ProgramPriority uint16 = 2

	// FilterHandle is our cls_bpf handle: 0x4b53, "KS" in ASCII. Tools that
	// let the kernel pick get 1, 2, …; Cilium uses 1. Seen by
	// `tc filter show` as "handle 0x4b53".
	FilterHandle uint32 = 0x4b53

	// QdiscHandle is the handle of root qdiscs kubeshaper installs,
	// 4b53:0 ("KS:"), shown by `tc qdisc show` as "qdisc tbf 4b53: root".
	QdiscHandle uint32 = 0x4b53 << 16
)
