#!/usr/bin/env bash
# Take the local cluster down and leave the host as up.sh found it.
#
# Usage: tools/cluster/down.sh          (make cluster-down)
#
# 1. While the API and kubelet still run: stop the controllers (nothing
#    re-creates pods), delete the workload pods, then kubeshaper's agent, so
#    the agent removes its rules and kubelet tears every sandbox down through
#    CNI (veth, netns, IP lease).
# 2. Stop every process up.sh started, by the PID it recorded (containerd's
#    reaper then stops the shims and any container left).
# 3. Sweep what a crash could have left: mounts under .cluster, cni-* netns,
#    veths on the bridge and the bridge, KUBE-*/CNI-* iptables chains and
#    the rules jumping to them, nftables tables that did not exist, the
#    recorded sysctls, kubepods cgroups, host paths, kubeshaper's pins.
#    With a confined node (CNI=cilium|flannel): its netns (and with it every
#    device, route, iptables rule and BPF attachment the CNI made there),
#    Cilium's private bpffs and cgroup mounts.
# 4. Verify against .cluster/host-before/ and print what, if anything, is
#    left; exit 1 then. Besides the cluster's own objects this diffs the
#    host's whole network state (lib.sh host_state: tc qdiscs and filters
#    and BPF attachments of every host interface, routes, rules, iptables,
#    sysctls) against the snapshot up.sh took; sysctls that differ are put
#    back first. The cluster's state is removed; logs are kept in
#    .cluster/logs and the verdict in .cluster/down-report.
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

if [[ ! -d "${PID_DIR}" && ! -d "${BEFORE_DIR}" ]]; then
	log "no cluster recorded in ${CLUSTER_DIR}: nothing to take down"
	exit 0
fi
t0=${SECONDS}

# ------------------------------------------------------------ 1. drain
api_ok() { proc_alive kube-apiserver && [[ -f "${KUBECONFIG_ADMIN}" ]] && timeout 5 "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" get --raw /readyz > /dev/null 2>&1; }
pods_left() { kubectl_admin get pods -A --no-headers "$@" 2>/dev/null | wc -l; }
no_pods() { (($(pods_left "$@") == 0)); }

if api_ok && proc_alive kubelet; then
	stop_proc kube-controller-manager
	stop_proc kube-scheduler
	if (($(pods_left --field-selector metadata.namespace!=kubeshaper-system) > 0)); then
		log "deleting workload pods"
		kubectl_admin delete pods -A --field-selector metadata.namespace!=kubeshaper-system --wait=false > /dev/null 2>&1 || true
		wait_for "workload pods to go" 90 no_pods --field-selector metadata.namespace!=kubeshaper-system || true
	fi
	if (($(pods_left) > 0)); then
		log "deleting the remaining pods (kubeshaper's agent)"
		kubectl_admin delete pods -A --all --wait=false > /dev/null 2>&1 || true
		wait_for "all pods to go" 60 no_pods || true
	fi
	left="$(pods_left)"
	((left == 0)) || log "${left} pods did not terminate in time: their sandboxes are swept below"
else
	log "API or kubelet not running: skipping the graceful drain, sweeping instead"
fi

# ------------------------------------------------------------ 2. processes
for c in kubelet kube-proxy kube-controller-manager kube-scheduler kube-apiserver; do
	stop_proc "${c}" 20
done
stop_proc containerd 40 # the reaper: containerd, then every shim and container
stop_proc etcd 20
for f in "${PID_DIR}"/*.pid; do
	[[ -e "${f}" ]] || continue
	n="$(basename "${f}" .pid)"
	stop_proc "${n}" 10
done
rmdir "${PID_DIR}" 2> /dev/null || true

# ------------------------------------------------------------ 3. sweep
before() { [[ -f "${BEFORE_DIR}/$1" ]] && cat "${BEFORE_DIR}/$1" || true; }
in_list() { grep -qxF -- "$1" <<< "$2"; }

# Mounts: container rootfs, shm, kubelet volumes (all under .cluster).
mapfile -t mnts < <(findmnt -rn -o TARGET | awk -v p="${CLUSTER_DIR}/" 'index($0, p) == 1' | sort -r)
for m in "${mnts[@]}"; do
	umount "${m}" 2> /dev/null || umount -l "${m}" 2> /dev/null || log "cannot unmount ${m}"
done

# The confined node: its netns takes the CNI's devices, routes, iptables
# and BPF attachments with it (the host end of its veth and the host's route
# to the pod CIDR die with the pair). Then Cilium's private mounts.
if [[ -e "/var/run/netns/${NODE_NETNS}" ]]; then
	ip netns del "${NODE_NETNS}" && log "removed the node netns ${NODE_NETNS}"
fi
if [[ -d "${CILIUM_RUN}" ]]; then
	mountpoint -q "${CILIUM_RUN}/proc/sys/net" && umount "${CILIUM_RUN}/proc/sys/net"
	mountpoint -q "${CILIUM_RUN}/bpffs" && umount "${CILIUM_RUN}/bpffs"
	rmdir "${CILIUM_RUN}/cgroup2/kscl-cilium" 2> /dev/null || true
	mountpoint -q "${CILIUM_RUN}/cgroup2" && umount "${CILIUM_RUN}/cgroup2"
fi

# Network namespaces containerd made (cni-<uuid>) that are still there.
netns_before="$(before netns)"
for ns in /var/run/netns/cni-*; do
	[[ -e "${ns}" ]] || continue
	in_list "$(basename "${ns}")" "${netns_before}" && continue
	umount "${ns}" 2> /dev/null || umount -l "${ns}" 2> /dev/null || true
	rm -f "${ns}"
	log "removed leftover netns ${ns}"
done

# The bridge's remaining ports (veths whose pod netns is gone die with it),
# then the bridge.
if ip link show "${BRIDGE}" > /dev/null 2>&1; then
	for l in $(ip -o link show master "${BRIDGE}" 2> /dev/null | awk -F': ' '{split($2,a,"@"); print a[1]}'); do
		ip link del "${l}" 2> /dev/null && log "removed leftover veth ${l}"
	done
	ip link del "${BRIDGE}"
fi

# iptables: chains named KUBE-* / CNI-* that were not there before, and the
# rules elsewhere that jump to them; one iptables-restore per table.
sweep_iptables() {
	local fam="$1" save=iptables-save restore=iptables-restore before_chains t
	if [[ "${fam}" == 6 ]]; then save=ip6tables-save restore=ip6tables-restore; fi
	command -v "${save}" > /dev/null || return 0
	before_chains="$(before "chains${fam}")"
	for t in $("${save}" 2> /dev/null | awk '/^\*/{print substr($1,2)}'); do
		local ours=() c script
		for c in $("${save}" -t "${t}" | awk '/^:/{print substr($1,2)}' | grep -E '^(KUBE-|CNI-)' || true); do
			in_list "${t} ${c}" "${before_chains}" || ours+=("${c}")
		done
		((${#ours[@]})) || continue
		script="$("${save}" -t "${t}" | awk -v list=" ${ours[*]} " '
			BEGIN { print "*'"${t}"'" }
			/^-A / {
				chain = $2
				if (index(list, " " chain " ")) next   # flushed below anyway
				for (i = 3; i < NF; i++) if (($i == "-j" || $i == "-g") && index(list, " " $(i+1) " ")) {
					sub(/^-A /, "-D "); print; break
				}
			}
			END {
				n = split(list, a, " ")
				for (i = 1; i <= n; i++) if (a[i] != "") print "-F " a[i]
				for (i = 1; i <= n; i++) if (a[i] != "") print "-X " a[i]
				print "COMMIT"
			}')"
		if "${restore}" --noflush <<< "${script}"; then
			log "removed ${#ours[@]} iptables chains from ${t} (IPv${fam})"
		else
			log "could not remove iptables chains from ${t} (IPv${fam}): ${ours[*]}"
		fi
	done
}
sweep_iptables 4
sweep_iptables 6

# nftables tables created meanwhile (iptables-nft makes ip/ip6 filter, nat,
# mangle… on first use): removed when nothing is left in them.
if command -v nft > /dev/null && [[ -f "${BEFORE_DIR}/nft-tables" ]]; then
	nft_before="$(before nft-tables)"
	while read -r _ fam name; do
		[[ -n "${name}" ]] || continue
		in_list "table ${fam} ${name}" "${nft_before}" && continue
		# Empty = no rule lines and only base chains (those with a hook).
		body="$(nft list table "${fam}" "${name}" 2> /dev/null)" || continue
		chains="$(grep -cE '^\s*chain ' <<< "${body}" || true)"
		hooks="$(grep -cE '^\s*type .* hook ' <<< "${body}" || true)"
		rules="$(grep -vE '^\s*(table |chain |type |policy |\}|$)' <<< "${body}" | grep -c . || true)"
		if [[ "${chains}" == "${hooks}" && "${rules}" == 0 ]]; then
			nft delete table "${fam}" "${name}" && log "removed empty nftables table ${fam} ${name}"
		fi
	done < <(nft list tables 2> /dev/null)
fi

# sysctls back to what they were.
while IFS='=' read -r k v; do
	[[ -n "${k}" ]] || continue
	cur="$(sysctl -n "${k}" 2> /dev/null | tr '\t' ' ')" || continue
	if [[ "${cur}" != "${v}" ]]; then
		sysctl -qw "${k}=${v}" && log "restored ${k}=${v} (was ${cur})"
	fi
done < <(before sysctl)

# kubepods cgroups (kubelet's cgroupfs driver), deepest first.
cg_before="$(before cgroups)"
for h in /sys/fs/cgroup/*/; do
	d="${h}kubepods"
	[[ -d "${d}" ]] || continue
	in_list "${d}" "${cg_before}" && continue
	find "${d}" -depth -type d -exec rmdir {} \; 2> /dev/null || true
	[[ -d "${d}" ]] && log "cannot remove cgroup ${d} (tasks left?)"
done

# Host paths the components create on their own.
paths_before="$(before paths)"
for p in "${HOST_PATHS[@]}"; do
	[[ -e "${p}" ]] || continue
	in_list "${p}" "${paths_before}" && continue
	if findmnt -rn -o TARGET | grep -q "^${p}/"; then
		log "not removing ${p}: something is still mounted under it"
		continue
	fi
	rm -rf "${p}"
	log "removed ${p} (did not exist before the cluster)"
done

# kubeshaper's pinned maps in the node's pin dir (the DaemonSet keeps them
# across agent restarts): pinned files that were not there, then the dir if
# it is new and empty. Sub-directories belong to other netns: untouched.
bpf_before="$(before bpffs)"
if [[ -d /sys/fs/bpf/kubeshaper ]]; then
	for f in /sys/fs/bpf/kubeshaper/*; do
		[[ -e "${f}" && ! -d "${f}" ]] || continue
		in_list "${f}" "${bpf_before}" && continue
		rm -f "${f}" && log "removed pinned map ${f}"
	done
	if ! in_list /sys/fs/bpf/kubeshaper "${bpf_before}"; then
		rmdir /sys/fs/bpf/kubeshaper 2> /dev/null || true
	fi
fi

# /var/run/netns: undo what up.sh did to make it a shared mount point.
if [[ -f "${BEFORE_DIR}/netns-mount" ]]; then
	if grep -qx private "${BEFORE_DIR}/netns-mount"; then
		mount --make-private /var/run/netns 2> /dev/null || true
	fi
	if grep -qx bind "${BEFORE_DIR}/netns-mount"; then
		if ! findmnt -rn -o TARGET | grep -q '^/run/netns/'; then
			umount /var/run/netns 2> /dev/null || true
		else
			log "keeping the /var/run/netns bind mount: other netns are mounted in it now"
		fi
	fi
fi

# The machine-wide sysctls Cilium writes from any netns (its --procfs keeps
# them from it, lib.sh; put back should one get through). Every other
# sysctl is compared below, not reverted: other work on this machine may
# have changed it meanwhile, and the verdict says so.
if [[ -f "${BEFORE_DIR}/host/sysctl" ]]; then
	for k in kernel.timer_migration net.core.bpf_jit_enable net.ipv4.fib_multipath_use_neigh; do
		v="$(grep -m1 "^${k} = " "${BEFORE_DIR}/host/sysctl" | sed 's/^[^=]*= //')"
		cur="$(sysctl -n "${k}" 2> /dev/null | tr '\t' ' ')" || continue
		[[ -z "${v}" || "${cur}" == "${v}" ]] && continue
		sysctl -qw "${k}=${v}" 2> /dev/null && log "restored ${k}=${v} (was ${cur})"
	done
fi

# ------------------------------------------------------------ 4. verify
problems=()
[[ -e "/var/run/netns/${NODE_NETNS}" ]] && problems+=("node netns ${NODE_NETNS} left")
ip link show "${NODE_HOST_LINK}" > /dev/null 2>&1 && problems+=("link ${NODE_HOST_LINK} left")
if [[ -d "${BEFORE_DIR}/host" ]]; then
	host_state "${CLUSTER_DIR}/host-after"
	while IFS= read -r d; do
		[[ -n "${d}" ]] && problems+=("host changed: ${d}")
	done < <(host_state_diff "${BEFORE_DIR}/host" "${CLUSTER_DIR}/host-after")
fi
links_before="$(before links)"
ip link show "${BRIDGE}" > /dev/null 2>&1 && problems+=("bridge ${BRIDGE} still exists")
for l in $(ip -o link show | awk -F': ' '{split($2,a,"@"); print a[1]}' | grep -E '^veth[0-9a-f]{8}$' || true); do
	in_list "${l}" "${links_before}" || problems+=("veth ${l} left")
done
for ns in /var/run/netns/cni-*; do
	[[ -e "${ns}" ]] || continue
	in_list "$(basename "${ns}")" "${netns_before}" || problems+=("netns ${ns} left")
done
for fam in 4 6; do
	bc="$(before "chains${fam}")"
	while read -r t c; do
		[[ "${c}" =~ ^(KUBE-|CNI-) ]] || continue
		in_list "${t} ${c}" "${bc}" || problems+=("iptables (IPv${fam}) chain ${t}/${c} left")
	done < <(iptables_chains "${fam}")
done
if command -v nft > /dev/null && [[ -f "${BEFORE_DIR}/nft-tables" ]]; then
	while read -r line; do
		in_list "${line}" "$(before nft-tables)" || problems+=("nftables ${line} left")
	done < <(nft list tables 2> /dev/null)
fi
while IFS='=' read -r k v; do
	[[ -n "${k}" ]] || continue
	cur="$(sysctl -n "${k}" 2> /dev/null | tr '\t' ' ')" || continue
	[[ "${cur}" == "${v}" ]] || problems+=("sysctl ${k}=${cur}, was ${v}")
done < <(before sysctl)
for p in "${HOST_PATHS[@]}"; do
	[[ -e "${p}" ]] && ! in_list "${p}" "${paths_before}" && problems+=("path ${p} left")
done
for h in /sys/fs/cgroup/*/; do
	[[ -d "${h}kubepods" ]] && ! in_list "${h}kubepods" "${cg_before}" && problems+=("cgroup ${h}kubepods left")
done
if [[ -d /sys/fs/bpf/kubeshaper ]]; then
	for f in /sys/fs/bpf/kubeshaper/*; do
		[[ -e "${f}" && ! -d "${f}" ]] && ! in_list "${f}" "${bpf_before}" && problems+=("pinned ${f} left")
	done
fi
findmnt -rn -o TARGET | awk -v p="${CLUSTER_DIR}/" 'index($0, p) == 1' | grep -q . && problems+=("mounts under ${CLUSTER_DIR} left")

# State goes; logs and the verdict stay.
for d in "${CLUSTER_DIR}"/*; do
	case "$(basename "${d}")" in
	logs | logs.prev | down-report | timings | e2e-results.txt | e2e-cni) ;;
	*) rm -rf "${d}" ;;
	esac
done

secs=$((SECONDS - t0))
{
	echo "down $(date -Is) took=${secs}s"
	if ((${#problems[@]})); then
		printf 'LEFT: %s\n' "${problems[@]}"
	else
		echo "host restored: no leftover veths, netns, iptables chains, nftables tables, sysctls, paths, cgroups, pins, mounts; host interfaces' qdiscs/filters/BPF attachments, routes, rules, iptables and sysctls as before"
	fi
} | tee "${CLUSTER_DIR}/down-report" >&2
echo "down $(date -Is) took=${secs}s" >> "${CLUSTER_DIR}/timings"
((${#problems[@]} == 0)) || exit 1
log "cluster down in ${secs}s; logs kept in ${LOG_DIR}"
