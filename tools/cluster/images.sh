#!/usr/bin/env bash
# Build container images without an engine or a registry and import them
# into the local cluster's containerd.
#
# Usage: tools/cluster/images.sh [--no-import] IMAGE...
#   IMAGE: pause | traffic | agent
#
# Each image is one layer holding static (CGO_ENABLED=0) Go binaries,
# written as a docker-archive tar by tools/imgtar to .cache/cluster-tools/,
# then `ctr -n k8s.io images import`ed (unless --no-import). Every image is
# tagged twice: <name>:dev and <name>:dev-<12 hex of its image ID>; the
# second is written to .cluster/images/<IMAGE>.ref so deploy.sh can pin the
# exact content (a changed binary = a new tag = a DaemonSet rollout).
#
#   pause    kubeshaper/pause:dev    tools/pause     containerd's sandbox_image
#   traffic  kubeshaper/traffic:dev  tools/traffic   `traffic serve` by default
#   agent    kubeshaper/agent:dev    cmd/kubeshaper-agent + cmd/kubeshaper
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

do_import=1
if [[ "${1:-}" == "--no-import" ]]; then
	do_import=0
	shift
fi
[[ $# -gt 0 ]] || die "usage: images.sh [--no-import] pause|traffic|agent..."

mkdir -p "${TOOLS_BIN}/static" "${CLUSTER_DIR}/images"

# Source tree the agent's binaries are built from: the working tree, or
# KUBESHAPER_SRC (e.g. a `git archive` of a commit, to test exactly that).
SRC="${KUBESHAPER_SRC:-${REPO}}"

# go_static DIR OUT PKG: a static, stripped binary for the image.
go_static() {
	(cd "$1" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" go build -trimpath -ldflags "-s -w" -o "$2" "$3")
}

host_tools() {
	(cd "${REPO}" && go build -o "${TOOLS_BIN}/imgtar" ./tools/imgtar)
}

build_image() {
	local img="$1" name tarball id args=()
	case "${img}" in
	pause)
		name="kubeshaper/pause"
		go_static "${REPO}" "${TOOLS_BIN}/static/pause" ./tools/pause
		args=(-file "${TOOLS_BIN}/static/pause:/pause" -entrypoint /pause)
		;;
	traffic)
		name="kubeshaper/traffic"
		go_static "${REPO}" "${TOOLS_BIN}/static/traffic" ./tools/traffic
		args=(-file "${TOOLS_BIN}/static/traffic:/usr/local/bin/traffic"
			-entrypoint /usr/local/bin/traffic -cmd serve)
		;;
	agent)
		name="kubeshaper/agent"
		go_static "${SRC}" "${TOOLS_BIN}/static/kubeshaper-agent" ./cmd/kubeshaper-agent
		go_static "${SRC}" "${TOOLS_BIN}/static/kubeshaper" ./cmd/kubeshaper
		args=(-file "${TOOLS_BIN}/static/kubeshaper-agent:/usr/local/bin/kubeshaper-agent"
			-file "${TOOLS_BIN}/static/kubeshaper:/usr/local/bin/kubeshaper"
			-entrypoint /usr/local/bin/kubeshaper-agent)
		;;
	*) die "unknown image '${img}' (pause, traffic, agent)" ;;
	esac
	tarball="${TOOLS_BIN}/${img}.tar"
	# First pass only to learn the content ID; the second adds the ID tag.
	id="$("${TOOLS_BIN}/imgtar" -o "${tarball}" -tag "${name}:dev" "${args[@]}")"
	local ref="${name}:dev-${id:7:12}"
	"${TOOLS_BIN}/imgtar" -o "${tarball}" -tag "${name}:dev" -tag "${ref}" "${args[@]}" > /dev/null
	echo "${ref}" > "${CLUSTER_DIR}/images/${img}.ref"
	if ((do_import)); then
		[[ -S "${CONTAINERD_SOCK}" ]] || die "containerd is not running (${CONTAINERD_SOCK}): make cluster-up first"
		ctr -a "${CONTAINERD_SOCK}" -n k8s.io images import --snapshotter overlayfs "${tarball}" > /dev/null
		log "image ${ref} (also ${name}:dev) imported, $(du -h "${tarball}" | cut -f1)"
	else
		log "image ${ref} written to ${tarball}"
	fi
}

host_tools
for img in "$@"; do
	build_image "${img}"
done
