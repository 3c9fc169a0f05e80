#!/usr/bin/env bash
# Build pinned Kubernetes components from the Go module proxy into
# <repo>/.cache/k8s/<version>/bin/.
#
# Usage: tools/k8sbin/build.sh [component...]     (default: kube-apiserver)
#
# Components: kube-apiserver kubectl kubelet kube-controller-manager
#             kube-scheduler kube-proxy
#
# The version is pinned in tools/k8sbin/VERSION (and only there). A component
# whose binary already exists in the cache is skipped. The cache root can be
# moved with KUBESHAPER_K8S_CACHE (default: <repo>/.cache/k8s).
#
# How (the shared steps are tools/modsrc/modsrc.sh's): `go mod download`
# the k8s.io/kubernetes module at VERSION, copy its
# source somewhere writable, point every `./staging/src/k8s.io/X` replace at
# the published k8s.io/X module of the same release (the staging modules are
# not part of the kubernetes module zip; the published ones are the same code),
# then `go build` with -mod=mod and the usual version stamps.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"

version="$(tr -d '[:space:]' < "${script_dir}/VERSION")"
if [[ ! "${version}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "k8sbin: bad version '${version}' in ${script_dir}/VERSION (want v1.MINOR.PATCH)" >&2
	exit 2
fi
minor="${BASH_REMATCH[1]}"
# Staging modules are published as v0.MINOR.PATCH for kubernetes v1.MINOR.PATCH.
staging_version="v0.${version#v1.}"

all_components=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy)

components=("$@")
if [[ ${#components[@]} -eq 0 ]]; then
	components=(kube-apiserver)
fi
for c in "${components[@]}"; do
	ok=0
	for a in "${all_components[@]}"; do
		[[ "${c}" == "${a}" ]] && ok=1
	done
	if [[ ${ok} -eq 0 ]]; then
		echo "k8sbin: unknown component '${c}' (known: ${all_components[*]})" >&2
		exit 2
	fi
done

cache_root="${KUBESHAPER_K8S_CACHE:-${repo_root}/.cache/k8s}"
cache="${cache_root}/${version}"
bin_dir="${cache}/bin"
src_dir="${cache}/src"
mkdir -p "${bin_dir}"

log() { echo "k8sbin: $*" >&2; }

# shellcheck source=tools/modsrc/modsrc.sh
source "${script_dir}/../modsrc/modsrc.sh"
modsrc_lock "${cache}" k8sbin

missing=()
for c in "${components[@]}"; do
	if [[ -x "${bin_dir}/${c}" ]]; then
		log "${c} ${version}: cached at ${bin_dir}/${c}"
	else
		missing+=("${c}")
	fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

total_start=${SECONDS}

modsrc_env

# Point every staging replace at the published module of the same release
# (run inside the copy of the source).
rewrite_staging() {
	log "rewriting staging replaces to published modules at ${staging_version}"
	sed -i -E "s#^([[:space:]]*)(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+[[:space:]]*\$#\1\2 => \2 ${staging_version}#" go.mod
	if grep -q '=> \./staging/' go.mod; then
		log "some staging replace lines were not rewritten:"
		grep '=> \./staging/' go.mod >&2
		return 1
	fi
}
step_start=${SECONDS}
if [[ ! -f "${src_dir}/.prepared" ]]; then
	modsrc_prepare "${cache}" "k8s.io/kubernetes@${version}" "${src_dir}" k8sbin rewrite_staging
	log "source prepared in $((SECONDS - step_start))s"
fi

ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=${version}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${version}"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"

for c in "${missing[@]}"; do
	step_start=${SECONDS}
	hint=""
	[[ "${c}" == kube-apiserver ]] && hint=" (~2.5 min cold on an idle 2-core machine)"
	log "building ${c} ${version}${hint}"
	modsrc_build "${src_dir}" "${bin_dir}/${c}" "./cmd/${c}" "${ldflags}"
	log "built ${bin_dir}/${c} in $((SECONDS - step_start))s"
done

log "done in $((SECONDS - total_start))s"
