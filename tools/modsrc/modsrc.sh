# shellcheck shell=bash
# Sourced by the scripts that build a pinned third-party program from its
# Go module (tools/k8sbin, tools/cilium, tools/flannel): the module's source
# from the Go module proxy, prepared once into a machine-level cache, and
# built there. Each script keeps what is its own (version, cache root, the
# edits its module needs, flags); this file is the steps they share.
#
#   modsrc_lock DIR TAG           serialise builds in DIR (held until exit)
#   modsrc_env                    the toolchain settings every build uses
#   modsrc_prepare DIR MOD@VER SRC TAG [EDIT...]
#   modsrc_build SRC OUT PKG LDFLAGS

# modsrc_lock takes DIR/.lock on fd 9, saying so when another build holds
# it: several test binaries or CI steps may ask for the same build at once.
modsrc_lock() {
	exec 9>"$1/.lock"
	if ! flock -n 9; then
		echo "$2: waiting for another build in $1 to finish" >&2
		flock 9
	fi
}

# modsrc_env: the same toolchain for everything; never let a go.work or a
# vendor directory take over, nor cgo.
modsrc_env() {
	export GOWORK=off
	export GOFLAGS="-mod=mod -buildvcs=false"
	export CGO_ENABLED="${CGO_ENABLED:-0}"
}

# modsrc_prepare DIR MOD@VER SRC TAG [EDIT...] makes SRC a writable copy
# of the module's source, once (SRC/.prepared marks it done): `go mod
# download` (run in DIR), the copy without vendor/ and go.work (they refer
# to what the module zip does not hold), then EDIT... run inside the copy
# (the module's own fixes: replaced dependencies, dropped backends). SRC
# only appears complete: a failed preparation leaves SRC.tmp, redone next
# time.
modsrc_prepare() {
	local dir="$1" mod="$2" src="$3" tag="$4" mod_dir
	shift 4
	[[ -f "${src}/.prepared" ]] && return 0
	echo "${tag}: downloading ${mod} via the Go module proxy" >&2
	mod_dir="$(cd "${dir}" && go mod download -json "${mod}" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [[ -z "${mod_dir}" || ! -f "${mod_dir}/go.mod" ]]; then
		echo "${tag}: go mod download did not report a source directory" >&2
		return 1
	fi
	rm -rf "${src}" "${src}.tmp"
	cp -R "${mod_dir}" "${src}.tmp"
	chmod -R u+w "${src}.tmp"
	rm -rf "${src}.tmp/vendor" "${src}.tmp/go.work" "${src}.tmp/go.work.sum"
	if [[ $# -gt 0 ]]; then
		(cd "${src}.tmp" && "$@") || return 1
	fi
	touch "${src}.tmp/.prepared"
	mv "${src}.tmp" "${src}"
}

# modsrc_build SRC OUT PKG LDFLAGS builds PKG of the module in SRC into
# OUT, stripped and trimmed; OUT appears only once complete.
modsrc_build() {
	local src="$1" out="$2" pkg="$3" ldflags="$4"
	local tmp
	tmp="$(dirname "${out}")/.$(basename "${out}").tmp.$$"
	(cd "${src}" && go build -trimpath -ldflags "${ldflags}" -o "${tmp}" "${pkg}") || return 1
	mv -f "${tmp}" "${out}"
}
