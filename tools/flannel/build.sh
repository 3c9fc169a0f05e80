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
exec 9>"${cache}/.lock"
flock 9
[[ -x "${cache}/bin/flanneld" ]] && exit 0

export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
t0=${SECONDS}
echo "flannel-build: downloading github.com/flannel-io/flannel@${version} via the Go module proxy" >&2
mod_dir="$(cd "${cache}" && go mod download -json "github.com/flannel-io/flannel@${version}" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[[ -n "${mod_dir}" && -f "${mod_dir}/go.mod" ]] || { echo "flannel-build: no source directory" >&2; exit 1; }
rm -rf "${cache}/src"
cp -R "${mod_dir}" "${cache}/src"
chmod -R u+w "${cache}/src"
# The cluster uses VXLAN; two backends are left out: Tencent Cloud VPC (its
# SDK module, tencentcloud-sdk-go …/vpc, is not served by the proxy) and
# udp (it needs cgo).
sed -i -e '\#"github.com/flannel-io/flannel/pkg/backend/tencentvpc"#d' \
	-e '\#"github.com/flannel-io/flannel/pkg/backend/udp"#d' "${cache}/src/main.go"
(cd "${cache}/src" && go build -trimpath -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=${version}" \
	-o "${cache}/bin/.flanneld.tmp.$$" .)
mv -f "${cache}/bin/.flanneld.tmp.$$" "${cache}/bin/flanneld"
echo "flannel-build: built ${cache}/bin/flanneld in $((SECONDS - t0))s" >&2
