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
# How (the shared steps are tools/modsrc/modsrc.sh's): `go mod download`
# github.com/cilium/cilium at VERSION, copy the module directory somewhere
# writable, replace the gobgp pseudo-version it
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

# shellcheck source=tools/modsrc/modsrc.sh
source "${script_dir}/../modsrc/modsrc.sh"
modsrc_lock "${cache}" cilium-build

declare -A pkg=([cilium-agent]=./daemon [cilium-cni]=./plugins/cilium-cni)
missing=()
for b in cilium-agent cilium-cni; do
	[[ -x "${bin_dir}/${b}" ]] || missing+=("${b}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

modsrc_env
total_start=${SECONDS}
modsrc_prepare "${cache}" "github.com/cilium/cilium@${version}" "${src_dir}" cilium-build \
	go mod edit -replace "${gobgp_replace}"

for b in "${missing[@]}"; do
	step_start=${SECONDS}
	log "building ${b} ${version} (cilium-agent: ~4.5 min cold on an idle 2-core machine)"
	modsrc_build "${src_dir}" "${bin_dir}/${b}" "${pkg[$b]}" "-s -w"
	log "built ${bin_dir}/${b} in $((SECONDS - step_start))s"
done
log "done in $((SECONDS - total_start))s"
