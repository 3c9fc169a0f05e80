#!/usr/bin/env bash
# Runs kubeshaper's kernel-facing tests natively on this (virtual) machine:
# the packages `make test-kernels` runs in qemu guests. Used by the
# Vagrantfile's boxes; works on any Debian/Ubuntu VM with root. Needs Go
# (go.mod's version) on PATH, or installs Debian's and lets it fetch the
# pinned toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends iproute2 kmod ca-certificates git make >/dev/null

export PATH=/usr/local/go/bin:$PATH
if ! command -v go >/dev/null || ! go version >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends golang-go >/dev/null
  want=$(awk '/^go /{print $2}' go.mod)
  dir=$(cd /tmp && GOTOOLCHAIN=local /usr/lib/go/bin/go mod download -json "golang.org/toolchain@v0.0.1-go${want}.linux-amd64" | awk -F'"' '/"Dir"/{print $4}')
  export PATH=$dir/bin:$PATH
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
for m in veth sch_ingress cls_bpf sch_fq sch_tbf cls_u32 sch_prio; do modprobe "$m" || true; done

echo "kernel $(uname -r), $(go version)"
# Debian kernels have sch_fq: pace and delay tests must run, not skip.
export KUBESHAPER_KFEATURE_REQUIRE=${KUBESHAPER_KFEATURE_REQUIRE:-CONFIG_NET_SCH_FQ}
CGO_ENABLED=0 go test -count=1 -timeout 20m ${VMTEST_FLAGS:-} \
  ./pkg/datapath ./pkg/attach ./pkg/podnet ./pkg/shaper ./cmd/kubeshaper ./tests/kfeature ./tests/guest
