#!/usr/bin/env bash
# Build the pinned helm (tools/helmbin/VERSION) from the Go module proxy
# into <cache>/<version>/bin/helm, as tools/k8sbin does for Kubernetes.
#
# Usage: tools/helmbin/build.sh          (prints the binary's path)
#
# The cache root is KUBESHAPER_HELM_CACHE, else /var/cache/kubeshaper/helm
# when /var/cache/kubeshaper exists (the machine-level cache CI keeps),
# else <repo>/.cache/helm. Built once (~2 min cold on 2 cores), then reused.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
version="$(tr -d '[:space:]' < "${here}/VERSION")"
[[ "${version}" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || { echo "helmbin: bad version '${version}' in ${here}/VERSION" >&2; exit 2; }
root="${KUBESHAPER_HELM_CACHE:-}"
if [[ -z "${root}" ]]; then
	root="${repo}/.cache/helm"
	[[ -d /var/cache/kubeshaper ]] && root=/var/cache/kubeshaper/helm
fi
bin="${root}/${version}/bin"
mkdir -p "${bin}"
exec 9> "${root}/${version}/.lock"
flock 9
if [[ ! -x "${bin}/helm" ]]; then
	echo "helmbin: building helm ${version} from the Go module proxy" >&2
	start=${SECONDS}
	(cd "${root}/${version}" && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="${bin}.tmp" \
		go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${version}" "helm.sh/helm/v3/cmd/helm@${version}")
	mv -f "${bin}.tmp/helm" "${bin}/helm"
	rmdir "${bin}.tmp"
	echo "helmbin: built ${bin}/helm in $((SECONDS - start))s" >&2
fi
echo "${bin}/helm"
