#!/usr/bin/env bash
# Install what the local cluster, `make demo` and `make e2e` need and the
# machine lacks, from Debian's apt (and Go through the Go module proxy):
#   containerd runc containernetworking-plugins etcd-server iptables
#   nftables openssl iproute2 util-linux bpftool, and a Go toolchain.
#
# Run it (tools/cluster/deps.sh) or source it: sourced, it also puts the
# Go toolchain it found or fetched on the caller's PATH.
set -euo pipefail

ks_deps_main() {
	local repo pkgs=() want dir
	repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
	[[ $(id -u) -eq 0 ]] || { echo "deps: must run as root" >&2; return 1; }

	local -A need=(
		[containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
		[etcd]=etcd-server [iptables]=iptables [nft]=nftables [openssl]=openssl [ip]=iproute2
		[tc]=iproute2 [findmnt]=util-linux [bpftool]=bpftool [flock]=util-linux [git]=git [make]=make
	)
	local b
	for b in "${!need[@]}"; do
		if [[ "${b}" == /* ]]; then
			[[ -e "${b}" ]] || pkgs+=("${need[${b}]}")
		else
			command -v "${b}" > /dev/null || pkgs+=("${need[${b}]}")
		fi
	done
	if ((${#pkgs[@]})); then
		mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
		echo "deps: apt-get install ${pkgs[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
	fi

	# Go: the machine's, else Debian's bootstrap go fetching the toolchain
	# go.mod pins through the Go module proxy (Debian's own is too old).
	export PATH="/usr/local/go/bin:${PATH}"
	if ! command -v go > /dev/null; then
		apt-get install -y -qq --no-install-recommends golang-go ca-certificates > /dev/null
		want="$(awk '/^go /{print $2}' "${repo}/go.mod")"
		dir="$(cd /tmp && /usr/lib/go/bin/go mod download -json "golang.org/toolchain@v0.0.1-go${want}.linux-amd64" | awk -F'"' '/"Dir"/{print $4}')"
		export PATH="${dir}/bin:${PATH}"
	fi
	echo "deps: ok ($(go version))" >&2
}

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
	ks_deps_main
else
	ks_deps_main || return 1
fi
