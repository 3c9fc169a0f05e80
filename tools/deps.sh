#!/usr/bin/env bash
# The one list of what kubeshaper's make targets need from the machine,
# installed from Debian's apt when missing (and a Go toolchain through the
# Go module proxy when the machine has none). `make test`, `make demo`,
# `make e2e`/`cluster-up` and CI (.ci/run) all go through it.
#
# Usage: tools/deps.sh GROUP...        (as root; groups below)
#        source tools/deps.sh GROUP... (also puts Go on the caller's PATH)
#
#   cluster   the local single-node cluster (make cluster-up, demo, e2e):
#             containerd runc containernetworking-plugins etcd-server
#             iptables nftables openssl iproute2 util-linux bpftool
#   test      make test: cluster + the netns/traffic tests (iputils-ping,
#             iperf3) + the qemu kernel run (qemu-system-x86 busybox-static
#             cpio kmod xz-utils zstd)
#   generate  make generate / check-generate: clang llvm libbpf-dev
#             linux-libc-dev gcc-multilib
#   ci        test + generate (.ci/run)
#
# Every group also gets git, make and Go. A package is judged present by a
# file it installs (a binary where it has one, so a containerd installed
# another way — Docker's containerd.io — is not replaced by Debian's).
# Nothing is installed when everything is present: a second run costs a
# few stat calls.
#
# Go: the machine's (/usr/local/go, or go on PATH when new enough), else
# Debian's bootstrap go fetching the toolchain go.mod pins through the Go
# module proxy; that toolchain is linked at <repo>/.cache/go, which the
# Makefile puts on PATH.
set -euo pipefail

# probe=package; a probe starting with / is a path, else a command name.
ks_deps_group() {
	case "$1" in
	base) echo "git=git make=make" ;;
	cluster) echo "containerd=containerd runc=runc /usr/lib/cni/bridge=containernetworking-plugins
		etcd=etcd-server iptables=iptables nft=nftables openssl=openssl ip=iproute2 tc=iproute2
		findmnt=util-linux flock=util-linux bpftool=bpftool" ;;
	test) ks_deps_group cluster
		echo "ping=iputils-ping iperf3=iperf3
		qemu-system-x86_64=qemu-system-x86 /bin/busybox=busybox-static cpio=cpio depmod=kmod
		xz=xz-utils zstd=zstd dpkg-deb=dpkg" ;;
	generate) echo "clang=clang llvm-strip=llvm /usr/include/bpf/bpf_helpers.h=libbpf-dev
		/usr/include/linux/bpf.h=linux-libc-dev /usr/include/x86_64-linux-gnu/gnu/stubs-32.h=gcc-multilib" ;;
	ci) ks_deps_group test; ks_deps_group generate ;;
	demo) ks_deps_group cluster ;;
	*) echo "deps: unknown group '$1' (cluster test generate ci demo)" >&2; return 2 ;;
	esac
}

ks_deps_main() {
	local repo
	repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
	((${#} > 0)) || set -- test
	local specs=() g s probe pkg pkgs=()
	for g in base "$@"; do
		local list
		list="$(ks_deps_group "${g}")" || return 2
		# shellcheck disable=SC2206
		specs+=(${list})
	done
	for s in "${specs[@]}"; do
		probe="${s%%=*}" pkg="${s#*=}"
		if [[ "${probe}" == /* ]]; then
			[[ -e "${probe}" ]] && continue
		else
			command -v "${probe}" > /dev/null && continue
		fi
		pkgs+=("${pkg}")
	done
	# The dynamic busybox also ships /bin/busybox: the qemu guests need
	# the static one (they have no libc).
	if [[ " ${*} " =~ \ (test|ci)\  && -e /bin/busybox ]] &&
		! dpkg-query -W -f='${Status}' busybox-static 2> /dev/null | grep -q 'ok installed'; then
		pkgs+=(busybox-static)
	fi
	if ((${#pkgs[@]})); then
		mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
		[[ $(id -u) -eq 0 ]] || { echo "deps: missing ${pkgs[*]}; run as root to install them" >&2; return 1; }
		echo "deps: apt-get install ${pkgs[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
	fi
	ks_deps_go "${repo}"
}

# ks_deps_go REPO: a Go toolchain at least as new as go.mod's on PATH.
ks_deps_go() {
	local repo="$1" want have dir
	want="$(awk '/^go /{print $2}' "${repo}/go.mod")"
	export PATH="/usr/local/go/bin:${repo}/.cache/go/bin:${PATH}"
	if command -v go > /dev/null; then
		have="$(go env GOVERSION 2> /dev/null || true)"
		have="${have#go}"
		if [[ -n "${have}" ]] && [[ "$(printf '%s\n%s\n' "${want}" "${have}" | sort -V | head -1)" == "${want}" ]]; then
			echo "deps: ok (go ${have})" >&2
			return 0
		fi
	fi
	[[ $(id -u) -eq 0 ]] || { echo "deps: no Go ${want}; run as root to fetch it" >&2; return 1; }
	apt-get install -y -qq --no-install-recommends golang-go ca-certificates > /dev/null
	dir="$(cd /tmp && GOTOOLCHAIN=local /usr/lib/go/bin/go mod download -json "golang.org/toolchain@v0.0.1-go${want}.linux-amd64" | awk -F'"' '/"Dir"/{print $4}')"
	[[ -x "${dir}/bin/go" ]] || { echo "deps: fetching Go ${want} failed" >&2; return 1; }
	mkdir -p "${repo}/.cache"
	ln -sfn "${dir}" "${repo}/.cache/go"
	echo "deps: ok ($(go version), linked at ${repo}/.cache/go)" >&2
}

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
	ks_deps_main "$@"
else
	ks_deps_main "$@" || return 1
fi
