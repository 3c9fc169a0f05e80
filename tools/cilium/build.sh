#!/usr/bin/env bash
# Build a pinned Cilium (cilium-agent and the cilium-cni plugin) from the Go
# module proxy into a machine-level cache:
#   ${KUBESHAPER_CILIUM_CACHE:-/var/cache/kubeshaper/cilium}/<version>/bin/
# and keep the module's source tree next to it (<version>/src): the agent
# compiles its datapath at run time from src/bpf with the machine's clang
# (--lib-dir), and the Cilium CRDs are applied from
# src/pkg/k8s/apis/cilium.io/client/crds.
#
# Usage: tools/cilium/build.sh          (prints nothing when cached)
#
# The version is pinned in tools/cilium/VERSION (and only there). Binaries
# that already exist are not rebuilt. A cold build takes ~5 min on an idle
# 2-core machine (the agent is ~190 MB).
#
# How: `go mod download` github.com/cilium/cilium at VERSION, copy the
# module directory somewhere writable, replace the gobgp pseudo-version it
# pins (not served by the proxy) with a released gobgp, and go build
# ./daemon and ./plugins/cilium-cni with -mod=mod. The operator is not
# built (sigs.k8s.io/mcs-api/controllers at the version it pins is not
# served): the cluster runs the agent without it (CRD identities, IPAM
# "kubernetes" with the node's podCIDR from the controller-manager).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(tr -d '[:space:]' < "${script_dir}/VERSION")"
if [[ ! "${version}" =~ ^v1\.[0-9]+\.[0-9]+$ ]]; then
	echo "cilium-build: bad version '${version}' in ${script_dir}/VERSION" >&2
	exit 2
fi
# The gobgp pseudo-version pinned by cilium v1.20.x is not served; this
# release is and compiles with it.
gobgp_replace="github.com/osrg/gobgp/v4=github.com/osrg/gobgp/v4@v4.7.0"

cache="${KUBESHAPER_CILIUM_CACHE:-/var/cache/kubeshaper/cilium}/${version}"
bin_dir="${cache}/bin"
src_dir="${cache}/src"
mkdir -p "${bin_dir}"
log() { echo "cilium-build: $*" >&2; }

exec 9>"${cache}/.lock"
if ! flock -n 9; then
	log "waiting for another build in ${cache} to finish"
	flock 9
fi

declare -A pkg=([cilium-agent]=./daemon [cilium-cni]=./plugins/cilium-cni)
missing=()
for b in cilium-agent cilium-cni; do
	[[ -x "${bin_dir}/${b}" ]] || missing+=("${b}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

export GOWORK=off
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED="${CGO_ENABLED:-0}"
total_start=${SECONDS}

if [[ ! -f "${src_dir}/.prepared" ]]; then
	log "downloading github.com/cilium/cilium@${version} via the Go module proxy (~85 MB)"
	mod_dir="$(cd "${cache}" && go mod download -json "github.com/cilium/cilium@${version}" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [[ -z "${mod_dir}" || ! -f "${mod_dir}/go.mod" ]]; then
		log "go mod download did not report a source directory"
		exit 1
	fi
	rm -rf "${src_dir}" "${src_dir}.tmp"
	cp -R "${mod_dir}" "${src_dir}.tmp"
	chmod -R u+w "${src_dir}.tmp"
	rm -rf "${src_dir}.tmp/vendor" "${src_dir}.tmp/go.work" "${src_dir}.tmp/go.work.sum"
	(cd "${src_dir}.tmp" && go mod edit -replace "${gobgp_replace}")
	touch "${src_dir}.tmp/.prepared"
	mv "${src_dir}.tmp" "${src_dir}"
fi

for b in "${missing[@]}"; do
	step_start=${SECONDS}
	log "building ${b} ${version} (cilium-agent: ~4.5 min cold on an idle 2-core machine)"
	tmp_out="${bin_dir}/.${b}.tmp.$$"
	(cd "${src_dir}" && go build -trimpath -ldflags "-s -w" -o "${tmp_out}" "${pkg[$b]}")
	mv -f "${tmp_out}" "${bin_dir}/${b}"
	log "built ${bin_dir}/${b} in $((SECONDS - step_start))s"
done
log "done in $((SECONDS - total_start))s"
