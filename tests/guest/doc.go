// Package guest holds kubeshaper's real-traffic tests of EDT: pace mode
// (rules.ModePace) and delay with jitter, through pkg/shaper on netlab pods,
// measured on the receiving interface (wire bytes) and by UDP echo RTT.
//
// They need the fq qdisc (CONFIG_NET_SCH_FQ). Where the kernel is built
// without it (the development host) they skip; on a kernel built with it
// they must pass (tests/kfeature). `make test-kernels` runs them in qemu
// guests on Debian kernels 5.10 … 7.3, where fq is a module: see
// tools/kernels/README.md for the figures.
package guest
