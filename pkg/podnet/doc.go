// Package podnet finds a pod's network plumbing: it enters network
// namespaces safely and resolves the two ends of a pod's veth pair, from
// the pod side (netns + IP → host veth) and from the host side (host veth →
// netns path + pod interface).
//
// Everything here is read-only: podnet never creates, moves or configures
// an interface. The "current" or "caller's" netns is the netns of the
// calling OS thread; in a process that only enters other namespaces through
// Do, that is the process's netns.
package podnet
