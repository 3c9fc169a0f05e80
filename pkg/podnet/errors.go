package podnet

import "errors"

var (
	// ErrNotVeth means the interface is not a veth: the pod uses macvlan,
	// ipvlan, SR-IOV, or runs with hostNetwork. kubeshaper cannot attach to
	// a host-side peer that does not exist.
	ErrNotVeth = errors.New("not a veth interface")

	// ErrNoInterface means no interface holds the pod IP (or has the
	// requested name).
	ErrNoInterface = errors.New("no such interface")

	// ErrPeerNotFound means the veth's other end is not where it should be:
	// not in the caller's netns (HostPeer), in no netns podnet can name
	// (PodEnd), or in the same netns as the veth itself.
	ErrPeerNotFound = errors.New("veth peer not found")
)
