package datapath

// The object is compiled at development time and committed (shaper_bpfel.go,
// shaper_bpfel.o) so that building the agent needs no clang; CI regenerates
// it and fails when the result differs from what is committed.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" -target bpfel -type ks_rule -type ks_counters -type ks_flow_key -type ks_flow -type ks_flow_set -type ks_flow_way -type ks_peer_key -type ks_targets -type ks_port_range -type ks_pcpu_counters shaper ../../bpf/shaper.c -- -I../../bpf

// The wrapper custom programs run in (pkg/datapath/custom.go).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel custom ../../bpf/custom.c -- -I../../bpf
