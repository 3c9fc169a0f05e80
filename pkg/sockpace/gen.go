package sockpace

// Compiled at development time and committed (sockpace_bpfel.go/.o), like
// pkg/datapath's object: building the agent needs no clang. CI regenerates
// it and fails when the result differs.
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type ksp_key -type ksp_rule -type ksp_group_key sockpace ../../bpf/sockpace.c -- -I../../bpf
