#!/bin/sh
# make bench-memory: kubeshaper's memory on this machine and in qemu guests
# with 64 and 192 CPUs (TCG: slow, minutes per boot), for this tree and for
# the baseline (the code before issue 12, BASELINE), under the DaemonSet's
# memory limit (the baseline under the limit it shipped with, 256Mi).
# Writes docs/bench/memory.jsonl; tools/readmefigs renders it.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
BASELINE=${BASELINE:-dccdc85}
KERNEL=${KERNEL:-6.18}
CPUS=${CPUS:-"64 192"}
PODS=${PODS:-0,250,500}
out=docs/bench/memory.jsonl
work=${KERNELS_CACHE:-$repo/.cache/kernels}/membench
mkdir -p "$work"
CGO_ENABLED=0 go build -o "$work/membench-today" ./tools/membench
# The baseline: its own tree, with this loader (built against its API).
# BASELINE=none measures this tree only (with KEEP_OTHER_ROWS=1 the
# baseline's rows already in the file stay).
baseargs=""
if [ "$BASELINE" != none ]; then
	rm -rf "$work/base"
	git worktree add --force --detach "$work/base" "$BASELINE" >/dev/null
	cp tools/membench/*.go "$work/base/tools/membench/" 2>/dev/null || { mkdir -p "$work/base/tools/membench"; cp tools/membench/*.go "$work/base/tools/membench/"; }
	(cd "$work/base" && CGO_ENABLED=0 go build -tags baseline -o "$work/membench-baseline" ./tools/membench)
	git worktree remove --force "$work/base"
	baseargs="-baseline-bin $work/membench-baseline"
fi
: >"$out.new"
# shellcheck disable=SC2086 # baseargs: zero or two words
"$work/membench-today" -pod-counts "$PODS" $baseargs -out "$out.new"
for n in $CPUS; do
	# shellcheck disable=SC2086
	KERNEL=$KERNEL QEMU_EXTRA_ARGS="-smp $n -m $((2048 + n * 16))" KERNELS_TIMEOUT=${KERNELS_TIMEOUT:-2400s} \
		tools/kernels/qemu-exec "$work/membench-today" -pod-counts "$PODS" $baseargs |
		grep '^{' >>"$out.new" || echo "membench: the guest with $n CPUs failed" >&2
done
# KEEP_OTHER_ROWS=1: a partial run (some CPUS or PODS) replaces only the
# rows it measured; the others stay as they were, with their own kernel
# and date of measurement in the file's history.
if [ "${KEEP_OTHER_ROWS:-0}" = 1 ] && [ -f "$out" ]; then
	python3 - "$out" "$out.new" <<'PY'
import json, sys
old, new = sys.argv[1], sys.argv[2]
key = lambda r: (r.get("build"), r.get("cpus"), r.get("pods"))
fresh = [l for l in open(new) if l.startswith("{")]
have = {key(json.loads(l)) for l in fresh}
kept = [l for l in open(old) if l.startswith("{") and key(json.loads(l)) not in have]
rows = sorted(kept + fresh, key=lambda l: (json.loads(l)["cpus"], json.loads(l)["pods"], json.loads(l)["build"] != "today"))
open(new, "w").writelines(rows)
PY
fi
mv "$out.new" "$out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
