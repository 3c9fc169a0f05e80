# kubeshaper — build, test, benchmark. Tests and benchmarks need root (BPF,
# network namespaces); `make test` is what CI runs (.ci/run).
GO        ?= go
# tools/deps.sh links a fetched Go toolchain at .cache/go when the machine
# has none (a bare machine): every target finds it.
export PATH := /usr/local/go/bin:$(CURDIR)/.cache/go/bin:$(PATH)
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 60s
BPFFS     := /sys/fs/bpf

.PHONY: deps test-run plugin-figures all build generate check-generate test test-kernels test-kernels-ci bench-kernels test-unit fuzz fuzz-long churn reliability bench bench-prog bench-datapath bench-pacing bench-agent bench-agent-gc bench-agent-vs bench-monitoring bench-memory bench-sockpace-maps bench-agent-guest bench-agent-guests bench-cni bench-pacing-guest readme-figures bpffs vet clean \
	cluster-up cluster-down deploy e2e e2e-cni cilium flannel demo

all: build

build:
	$(GO) build -o $(BIN)/kubeshaper ./cmd/kubeshaper
	$(GO) build -o $(BIN)/kubeshaper-agent ./cmd/kubeshaper-agent
	$(GO) build -o $(BIN)/kubectl-kubeshaper ./cmd/kubectl-kubeshaper

# Regenerate the BPF object and its Go bindings (needs clang, llvm-strip,
# libbpf headers). The results are committed so `go build` needs no clang.
# Custom-program examples and test objects are compiled as an admin would
# (BTF kept, DWARF stripped). The BTF line info records the source path, so the
# checkout directory is mapped to ".": the objects are identical from any clone.
BPF_CFLAGS := -O2 -Wall -Werror -target bpf -I/usr/include/x86_64-linux-gnu
generate:
	$(GO) generate ./pkg/datapath/
	$(GO) generate ./pkg/sockpace/
	for d in bpf/examples pkg/datapath/testdata tests/foreign/testdata; do \
	  (cd $$d && for f in *.c; do g=-g; case $$f in *_nobtf.c) g=-g0;; esac; \
	    clang $(BPF_CFLAGS) $$g -fdebug-prefix-map=$$(pwd)=. -fdebug-compilation-dir=. -c $$f -o $${f%.c}.o && llvm-strip -g $${f%.c}.o || exit 1; done) || exit 1; \
	done

# CI: the committed object must be exactly what the sources compile to.
check-generate: generate
	git diff --exit-code -- pkg/datapath/ pkg/sockpace/ bpf/examples/ tests/foreign/ || { echo "generated BPF files differ from the committed ones: run 'make generate' and commit" >&2; exit 1; }

bpffs:
	@mountpoint -q $(BPFFS) || mount -t bpf bpf $(BPFFS)

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l cmd pkg tests tools)" || { gofmt -l cmd pkg tests tools; echo "gofmt needed" >&2; exit 1; }

# What the machine must have (apt packages, Go): tools/deps.sh, one list
# for make test, demo, e2e, cluster-up and CI. DEPS picks its groups.
DEPS ?= test
deps:
	tools/deps.sh $(DEPS)

# Everything CI proves: vet, every test (prog.Run, real netns/veth traffic,
# real kube-apiserver), each fuzzer for FUZZTIME, the real-node e2e (its
# own step, so `go test ./...` skips it: KUBESHAPER_E2E=0), and the
# kernel-facing tests on Debian kernels 5.10 … 7.3 in qemu (CI-sized).
# KERNELS_CACHE (default .cache/kernels) holds the ~1 GB of kernels.
# First installs what is missing (tools/deps.sh test), so that it runs on
# a bare machine, and builds the pinned helm (tests/chart) once; a second
# make reads the PATH the installed Go is on.
test:
	tools/deps.sh test
	tools/helmbin/build.sh > /dev/null
	$(MAKE) test-run

test-run: bpffs vet build
	KUBESHAPER_E2E=0 $(GO) test -count=1 -timeout 20m $(PKGS)
	$(MAKE) fuzz
	$(MAKE) e2e
	$(MAKE) test-kernels-ci

# The kernel-facing tests (prog.Run, attach, netns, shaper, CLI, pace mode
# and delay with real traffic) in qemu guests booted with Debian's kernels:
# tools/kernels/README.md. KERNELS picks the kernel lines (or exact ABIs),
# KERNELS_SKIP is a `go test -skip` regexp, KERNELS_CACHE where kernels
# are cached (default .cache/kernels).
KERNELS      ?= 5.10 6.1 6.12 6.18 7.3
KERNELS_SKIP ?=
test-kernels:
	$(GO) run ./tools/kernels run -kernels "$(KERNELS)" $(if $(KERNELS_SKIP),-skip '$(KERNELS_SKIP)') $(KERNELSFLAGS)

# CI's kernel run (.ci/run, after `make test`): every default kernel, the
# packages whose contact with the kernel changes across versions (verifier
# and prog.Run, tc netlink and qdiscs, the CLI, feature probes, pace and
# delay with real traffic), with -short (one pace rate per direction, two
# delays). ≈ 2 min per kernel on an idle 2-core machine; `make
# test-kernels` is the full run (≈ 4 min per kernel).
# CI's kernels: the oldest supported (5.10: no BPF atomics fallback, no
# netns cookie), tcx and netkit (6.12, with the synthetic CNI-coexistence
# tests of tests/cni: foreign tcx and cls_bpf programs, peer redirect,
# netkit, custom programs behind ours) and the newest (7.3). 6.1 and 6.18
# are in the full run (`make test-kernels`); 6.18 is also the host's line,
# where `go test ./...` runs the same packages natively. Measured in the
# CI run of 2026-12-05 (everything before this step: 11.7 min): 5.10
# 4.7 min, 6.1 4.6, 6.12 2.0, 6.18 2.2, 7.3 2.3, tests/cni on two kernels
# ≈ 3 — ≈ 30.5 min in all, at the budget's edge; these three ≈ 22.
KERNELS_CI      ?= 5.10 6.12 7.3
KERNELS_CI_PKGS ?= ./pkg/datapath ./pkg/attach ./cmd/kubeshaper ./tests/kfeature ./tests/guest ./pkg/sockpace
KERNELS_CI_CNI  ?= 6.12
test-kernels-ci:
	$(GO) run ./tools/kernels run -short -pkgs "$(KERNELS_CI_PKGS)" -kernels "$(filter-out $(KERNELS_CI_CNI),$(KERNELS_CI))" $(if $(KERNELS_SKIP),-skip '$(KERNELS_SKIP)') $(KERNELSFLAGS)
	$(GO) run ./tools/kernels run -short -pkgs "$(KERNELS_CI_PKGS) ./tests/cni" -kernels "$(KERNELS_CI_CNI)" $(if $(KERNELS_SKIP),-skip '$(KERNELS_SKIP)') $(KERNELSFLAGS)

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseAnnotations$$' -fuzztime $(FUZZTIME) ./pkg/rules/
	$(GO) test -run '^$$' -fuzz '^FuzzParseValue$$' -fuzztime $(FUZZTIME) ./pkg/rules/
	$(GO) test -run '^$$' -fuzz '^FuzzDesiredToDatapath$$' -fuzztime $(FUZZTIME) ./pkg/datapath/

# Nightly-style fuzzing: every fuzzer for FUZZTIME_LONG (3 x 4 min = 12 min).
FUZZTIME_LONG ?= 4m
fuzz-long:
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME_LONG)

# Reliability (docs/reliability.md: churn, crashes, API outage, hostile input, least privilege). `make test` runs
# tests/reliability at CI size (churn: 1,000 cycles); these run it at full
# size and write the figures to docs/bench/reliability.json.
RELIABILITY_JSON := KUBESHAPER_RELIABILITY_JSON=docs/bench/reliability.json
churn: bpffs
	$(RELIABILITY_JSON) KUBESHAPER_CHURN=10000 $(GO) test -count=1 -timeout 60m -run '^TestChurn$$' -v ./tests/reliability/

reliability: bpffs
	$(RELIABILITY_JSON) KUBESHAPER_CHURN=10000 $(GO) test -count=1 -timeout 90m -v ./tests/reliability/

# Figures: per-packet cost, then TCP accuracy / latency / loss on veths.
bench: bpffs build bench-prog bench-datapath bench-agent bench-monitoring bench-memory bench-agent-guests readme-figures

bench-prog:
	$(GO) test -run '^$$' -bench Prog -benchtime 2000000x -count 5 ./pkg/datapath/ | tee docs/bench/prog.txt

bench-datapath:
	$(GO) run ./tools/bench $(BENCHFLAGS)

# Issue 13: TCP under a limit, every enforcement side by side (drop,
# drop + socket pacing, mode=tbf, kernel tbf, the CNI bandwidth plugin;
# mode=pace only where sch_fq exists): docs/bench/pacing.json, pacing.txt,
# pacing-<target>.png. The full matrix (10M, 50M, 240M, 1G × egress,
# ingress from a same-node and an off-node sender × 1 and 8 streams × 3
# reps × 20 s, plus request/response and UDP at 2x) takes ≈ 2.5 h on 2
# cores; PACINGFLAGS="-rates 50M" is the ≈ 35 min run committed.
PACINGFLAGS ?=
bench-pacing: bpffs build
	$(GO) run ./tools/bench -sections pacing -out docs/bench $(PACINGFLAGS)

# mode=pace (EDT + fq) beside drop and drop + socket pacing (issue 13),
# where sch_fq exists: a qemu guest (TCG) on one kernel line, tests/guest
# TestModesSideBySide (knobs: KUBESHAPER_MODES_* in its comment; 50M, 1 and
# 8 streams, egress and same-node ingress, 3 reps × 20 s ≈ 13 min). The
# run's summary, failures included, goes to docs/bench/pacing-guest.md and
# the README; the exit status is the run's. Take the bench lock around it.
PACING_GUEST_KERNEL ?= 6.12
bench-pacing-guest:
	KUBESHAPER_BENCH=1 $(GO) run ./tools/kernels run -kernels "$(PACING_GUEST_KERNEL)" -pkgs ./tests/guest \
	  -run '^TestModesSideBySide$$' -timeout 40m -summary docs/bench/pacing-guest.md $(KERNELSFLAGS); rc=$$?; \
	  $(GO) run ./tools/readmefigs && exit $$rc

# The agent at 250 pods against a real kube-apiserver (docs/bench/agent.json).
bench-agent: bpffs
	KUBESHAPER_BENCH=1 $(GO) test -count=1 -run TestAgentScale -v -timeout 20m ./tools/bench/agentbench/

# The agent's memory with Go's default GOGC against its own (50), side by
# side against one apiserver (docs/bench/agent-gc.json).
bench-agent-gc: bpffs
	KUBESHAPER_BENCH=1 $(GO) test -count=1 -run TestAgentGCPercent -v -timeout 20m ./tools/bench/agentbench/

# This tree's agent against one built from BASE (a commit), side by side
# against one apiserver (docs/bench/agent-vs.json): for changes to what
# the binary links. Builds BASE from `git archive`, the same way as `build`.
BASE ?= main
bench-agent-vs: bpffs
	rm -rf .cache/agent-base && mkdir -p .cache/agent-base/src
	git archive "$(BASE)" | tar -x -C .cache/agent-base/src
	cd .cache/agent-base/src && $(GO) build -o ../kubeshaper-agent ./cmd/kubeshaper-agent
	KUBESHAPER_BENCH=1 KUBESHAPER_AGENT_BASE_BIN=$(CURDIR)/.cache/agent-base/kubeshaper-agent \
		KUBESHAPER_AGENT_BASE_REV=$$(git rev-parse --short "$(BASE)") \
		$(GO) test -count=1 -run TestAgentBinaries -v -timeout 30m ./tools/bench/agentbench/
	rm -rf .cache/agent-base

# What counting every pod costs: prog.Run ns/packet with flows on vs off,
# TCP throughput monitored vs not, agent CPU at 1 Gbit/s (docs/bench/monitoring.json).
bench-monitoring: bpffs
	KUBESHAPER_BENCH=1 $(GO) test -count=1 -run TestMonitoringCost -v -timeout 30m ./tools/bench/agentbench/

# Coexistence with eBPF CNIs (issue 11, docs/bench/coexistence.json): the
# issue's bypasses with the node CLI and what kubeshaper does about them, the
# per-packet cost of the tcx path against cls_bpf, the time to retake the
# position (21 takeovers), and the agent at 250 pods in the same run
# (docs/bench/agent-coexistence.json, beside the committed agent.json).
bench-cni: bpffs build
	KUBESHAPER_BENCH=1 $(GO) test -count=1 -run '^TestAgentHoldsPosition$$' -v -timeout 10m ./tests/agent/
	KUBESHAPER_BENCH=1 $(GO) test -count=1 -run '^(TestBenchCost|TestBenchCLI)$$' -v -timeout 30m ./tests/cni/
	KUBESHAPER_BENCH=1 KUBESHAPER_AGENT_JSON=agent-coexistence.json $(GO) test -count=1 -run TestAgentScale -v -timeout 20m ./tools/bench/agentbench/
	$(GO) run ./tools/readmefigs

# kubeshaper's memory on a node (issue 12, docs/bench/memory.jsonl): maps'
# memlock and memory cgroup usage at 0/250/500 pods, flows on, under the
# DaemonSet's memory limit, on this machine and in qemu guests with 64 and
# 192 CPUs (TCG: ~10-20 min a guest), this tree and the code before
# issue 12 (BASELINE). tools/membench/run.sh.
bench-memory: bpffs
	KERNELS_CACHE=$${KERNELS_CACHE:-.cache/kernels} tools/membench/run.sh

# Issue 12: socket pacing's three hash maps as they were (16,384
# preallocated entries each) and are (sized for a 250-pod node, entries
# allocated as added), empty and with 250 pods' entries: memlock, and what
# creating them charges to a memory cgroup (a child $(MEMCG_PREFIX)… of a
# cgroup v1 memory hierarchy, removed after); and what no preallocation
# costs the program's group insert and lookup (a tc program on a map of
# ksp_groups' layout: sock_ops cannot be test-run).
# docs/bench/sockpace-maps.json, sockpace-maps.txt.
MEMCG_V1 ?= /sys/fs/cgroup/memory
MEMCG_PREFIX ?= ksp-mem-
bench-sockpace-maps: bpffs
	KSP_MEMCG=$(MEMCG_V1) KSP_MEMCG_PREFIX=$(MEMCG_PREFIX) KSP_MEMORY_OUT=$(CURDIR)/docs/bench/sockpace-maps.json \
		$(GO) test -count=1 -run '^TestMapMemoryCharge$$' -v ./pkg/sockpace/
	$(GO) test -run '^$$' -bench BenchmarkGroupMap -benchtime 200000x -count 5 ./pkg/sockpace/ | tee docs/bench/sockpace-maps.txt

# The real agent in a qemu guest with CPUS CPUs (or CPUS=host: on this
# machine), under the DaemonSet's memory limit, 250 pods' rules applied,
# against a kube-apiserver on the host reached through qemu's user-mode
# network (restrict=on, one forward: tools/kernels KERNELS_APISERVER).
# docs/bench/agent-guest.json, a section per CPU count. TCG with 192 CPUs:
# ~15-30 min.
# AGENT_GUEST_BASE=<commit>: the agent built from that commit instead
# (section guest-N-<commit>), for a before/after from the same harness.
AGENT_GUEST_CPUS ?= 192
bench-agent-guest: bpffs
	$(if $(AGENT_GUEST_BASE),rm -rf .cache/agent-guest-base && mkdir -p .cache/agent-guest-base/src && \
		git archive "$(AGENT_GUEST_BASE)" | tar -x -C .cache/agent-guest-base/src && \
		cd .cache/agent-guest-base/src && CGO_ENABLED=0 $(GO) build -o ../kubeshaper-agent ./cmd/kubeshaper-agent)
	$(if $(AGENT_GUEST_BASE),KUBESHAPER_AGENTGUEST_BIN=$(CURDIR)/.cache/agent-guest-base/kubeshaper-agent KUBESHAPER_AGENTGUEST_BIN_CODE=$(AGENT_GUEST_BASE) KUBESHAPER_AGENTGUEST_TAG=$(AGENT_GUEST_BASE)) \
	KERNELS_CACHE=$${KERNELS_CACHE:-$(CURDIR)/.cache/kernels} KUBESHAPER_BENCH=1 KUBESHAPER_AGENTGUEST_CPUS=$(AGENT_GUEST_CPUS) \
		KERNELS_TIMEOUT=$${KERNELS_TIMEOUT:-50m} $(GO) test -count=1 -run '^TestAgentInGuest$$' -v -timeout 60m ./tools/bench/agentguest/ && \
		$(GO) run ./tools/readmefigs

# The real agent at 2, 64 and 192 CPUs (README "Memory on a node"): ~30 min.
AGENT_GUEST_CPU_LIST ?= 2 64 192
bench-agent-guests: bpffs
	for n in $(AGENT_GUEST_CPU_LIST); do $(MAKE) --no-print-directory bench-agent-guest AGENT_GUEST_CPUS=$$n || exit 1; done

# README.md quotes docs/bench/ through this, never by hand.
# The full kernel run as a figure: its summary (pass/fail per kernel, the
# pace and delay figures) goes to docs/bench/kernels.md and the README,
# failures included; the exit status is the run's.
bench-kernels:
	$(GO) run ./tools/kernels run -kernels "$(KERNELS)" $(KERNELSFLAGS); rc=$$?; \
	  cp "$${KERNELS_CACHE:-.cache/kernels}/results.md" docs/bench/kernels.md && \
	  $(GO) run ./tools/readmefigs && exit $$rc

readme-figures:
	$(GO) run ./tools/readmefigs

# The plugin's figures for the README: lint on its test directory, and the
# real-node e2e installed with Helm writing `kubectl kubeshaper status -A`
# beside the agent's own status (docs/bench/plugin-status.md). Takes the
# machine's cluster lock, then the bench lock (the order other real-node
# benchmarks take them in: the other order can deadlock).
plugin-figures: build
	{ echo '$$ kubectl kubeshaper lint -f cmd/kubectl-kubeshaper/testdata/lint'; \
	  $(BIN)/kubectl-kubeshaper lint -f cmd/kubectl-kubeshaper/testdata/lint 2>&1; echo "exit status $$?"; } > docs/bench/lint.txt
	KUBESHAPER_FIGURES=1 E2E_INSTALL=helm flock /tmp/ks-cluster.lock flock /tmp/ks-bench.lock tools/cluster/e2e.sh
	$(GO) run ./tools/readmefigs

clean:
	rm -rf $(BIN)

# A real node on this machine (tools/cluster/, README "Real node"): a
# single-node cluster (etcd, kube-apiserver, controller-manager, scheduler,
# kubelet, kube-proxy, containerd, CNI bridge) with all state in .cluster/.
# CNI=cilium|flannel: that CNI instead of the bridge, built from source
# (tools/cilium, tools/flannel; cached in /var/cache/kubeshaper), the node
# confined to a netns of its own so the CNI never touches this machine's
# uplink; cluster-down verifies the host's interfaces, BPF attachments,
# routes, rules, iptables and sysctls are as before.
CNI ?= bridge
cluster-up: bpffs
	tools/deps.sh cluster
	CNI=$(CNI) tools/cluster/up.sh

cluster-down:
	tools/cluster/down.sh

deploy:
	tools/cluster/deploy.sh

# `make e2e` (CI): tests/e2e on the bridge cluster. `make e2e CNI=cilium`
# (or flannel): tests/e2ecni under that CNI, every mode (Cilium: tcx, legacy
# tc, BPF host routing), results in docs/bench/cni.json. E2E_INSTALL=helm
# installs kubeshaper with the Helm chart instead of kustomize.
e2e: bpffs
	tools/deps.sh cluster
ifeq ($(CNI),bridge)
	tools/cluster/e2e.sh
else
	rc=0; tools/cluster/e2e-cni.sh $(CNI) || rc=$$?; $(GO) run ./tools/readmefigs; exit $$rc
endif

# The CNI matrix of the README (bridge, flannel, Cilium × 3 modes), from
# docs/bench/cni.json. NOT part of `make test`: a cold Cilium build alone is
# ~5 min on 2 cores and the five cluster runs ~15 min more, beyond what CI's
# 30-minute budget has left (~21 min used); run by hand, results committed.
e2e-cni: bpffs
	tools/deps.sh cluster
	rc=0; tools/cluster/e2e-cni.sh $(E2E_CNI_ROWS) || rc=$$?; $(GO) run ./tools/readmefigs; exit $$rc

cilium:
	tools/cilium/build.sh

flannel:
	tools/flannel/build.sh

demo:
	tools/cluster/demo.sh
