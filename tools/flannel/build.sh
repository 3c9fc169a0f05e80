#!/usr/bin/env bash
# Build a pinned flanneld from the Go module proxy into a machine-level cache:
#   ${KUBESHAPER_FLANNEL_CACHE:-/var/cache/kubeshaper/flannel}/<version>/bin/flanneld
#
# Usage: tools/flannel/build.sh          (prints nothing when cached)
#
# The version is pinned in tools/flannel/VERSION. `go build` of the
# module's root package, less one cloud backend (below). Its CNI
# plugin (github.com/flannel-io/cni-plugin) is not served by the proxy; it
# only reads flanneld's subnet.env and hands the pod to the bridge and
# host-local plugins, so tools/cluster/flannel.sh writes that delegate
# conflist itself from subnet.env.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(tr -d '[:space:]' < "${script_dir}/VERSION")"
[[ "${version}" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "flannel-build: bad version '${version}'" >&2; exit 2; }
cache="${KUBESHAPER_FLANNEL_CACHE:-/var/cache/kubeshaper/flannel}/${version}"
mkdir -p "${cache}/bin"
# shellcheck source=tools/modsrc/modsrc.sh
source "${script_dir}/../modsrc/modsrc.sh"
modsrc_lock "${cache}" flannel-build
[[ -x "${cache}/bin/flanneld" ]] && exit 0

modsrc_env
export CGO_ENABLED=0
t0=${SECONDS}
# The cluster uses VXLAN; two backends are left out: Tencent Cloud VPC (its
# SDK module, tencentcloud-sdk-go …/vpc, is not served by the proxy) and
# udp (it needs cgo).
modsrc_prepare "${cache}" "github.com/flannel-io/flannel@${version}" "${cache}/src" flannel-build \
	sed -i -e '\#"github.com/flannel-io/flannel/pkg/backend/tencentvpc"#d' \
	-e '\#"github.com/flannel-io/flannel/pkg/backend/udp"#d' main.go
modsrc_build "${cache}/src" "${cache}/bin/flanneld" . "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=${version}"
echo "flannel-build: built ${cache}/bin/flanneld in $((SECONDS - t0))s" >&2
