#!/usr/bin/env bash
# Cilium as the local cluster's CNI (make cluster-up CNI=cilium), without
# its operator: CRDs applied from the source tree, IPAM "kubernetes" (the
# node's podCIDR from kube-controller-manager), CRD identities allocated by
# the agent. The agent runs confined to the node's netns (lib.sh:
# $NODE_NETNS) with `ip netns exec`, its devices limited to the node's NIC
# ($NODE_NIC, a veth the cluster made), its bpffs and cgroup v2 root private
# mounts under $CILIUM_RUN (outside /sys, which `ip netns exec` remounts), no
# masquerading, no host firewall: nothing of it reaches this machine's own
# interfaces, routes or iptables.
#
# Usage: tools/cluster/cilium.sh start MODE   (up.sh calls it)
#        tools/cluster/cilium.sh restart MODE (switch mode on a running cluster)
#        tools/cluster/cilium.sh stop
#        tools/cluster/cilium.sh mode         (prints the running mode)
# MODE: tcx          tcx attachments, legacy host routing, kube-proxy
#       legacy       classic tc (cls_bpf) attachments: --enable-tcx=false
#       hostrouting  tcx and BPF host routing (kube-proxy replacement,
#                    delivery to pods with bpf_redirect_peer)
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

version="$(tr -d '[:space:]' < "${REPO}/tools/cilium/VERSION")"
CACHE="${KUBESHAPER_CILIUM_CACHE:-/var/cache/kubeshaper/cilium}/${version}"
CNI_CONF="${CLUSTER_DIR}/cni/net.d/05-cilium.conflist"

mode_flags() {
	case "$1" in
	tcx) echo --enable-tcx=true --kube-proxy-replacement=false --enable-host-legacy-routing=true ;;
	legacy) echo --enable-tcx=false --kube-proxy-replacement=false --enable-host-legacy-routing=true ;;
	hostrouting) echo --enable-tcx=true --kube-proxy-replacement=true --enable-host-legacy-routing=false ;;
	*) die "unknown Cilium mode '$1' (tcx, legacy, hostrouting)" ;;
	esac
}

mounts() {
	mkdir -p "${CILIUM_RUN}/bpffs" "${CILIUM_RUN}/cgroup2"
	mountpoint -q "${CILIUM_RUN}/bpffs" || mount -t bpf bpf "${CILIUM_RUN}/bpffs"
	mountpoint -q "${CILIUM_RUN}/cgroup2" || mount -t cgroup2 none "${CILIUM_RUN}/cgroup2"
	# A child cgroup nobody lives in: Cilium's socket-LB programs attach
	# there, so they apply to no process of this machine.
	mkdir -p "${CILIUM_RUN}/cgroup2/kscl-cilium"
	# Its sysctls go through --procfs: net/ is the real /proc/sys/net, which
	# resolves in the writer's netns (the node's); kernel/ does not exist, so
	# its machine-wide writes (kernel.unprivileged_bpf_disabled=1, which
	# cannot be undone until reboot, kernel.timer_migration=0) fail, and
	# Cilium ignores those failures by design.
	mkdir -p "${CILIUM_RUN}/proc/sys/net"
	mountpoint -q "${CILIUM_RUN}/proc/sys/net" || mount --bind /proc/sys/net "${CILIUM_RUN}/proc/sys/net"
}

api() { curl -sf --max-time 3 --unix-socket /var/run/cilium/cilium.sock "http://localhost/v1/$1"; }

start() {
	local mode="$1"
	[[ -x "${CACHE}/bin/cilium-agent" && -x "${CACHE}/bin/cilium-cni" ]] || "${REPO}/tools/cilium/build.sh"
	mode_flags "${mode}" > /dev/null
	mounts
	ln -sf "${CACHE}/bin/cilium-cni" "${CLUSTER_DIR}/cni/bin/cilium-cni"
	local crd
	for crd in "${CACHE}"/src/pkg/k8s/apis/cilium.io/client/crds/*/*.yaml; do
		kubectl_admin apply --server-side -f "${crd}" > /dev/null
	done
	# IPAM "kubernetes": the agent takes the node's podCIDR.
	wait_for "node ${NODE_NAME} with a podCIDR" 120 has_pod_cidr ||
		die "node ${NODE_NAME} has no podCIDR (kube-controller-manager: ${LOG_DIR}/kube-controller-manager.log)"
	# shellcheck disable=SC2046
	start_proc cilium-agent ip netns exec "${NODE_NETNS}" \
		env K8S_NODE_NAME="${NODE_NAME}" "${CACHE}/bin/cilium-agent" \
		--k8s-kubeconfig-path="${KUBECONFIG_ADMIN}" \
		--ipam=kubernetes --routing-mode=native --ipv4-native-routing-cidr="${CLUSTER_CIDR}" \
		--enable-ipv6=false --enable-ipv4=true \
		--devices="${NODE_NIC}" --direct-routing-device="${NODE_NIC}" \
		--enable-ipv4-masquerade=false --enable-host-firewall=false \
		--enable-l7-proxy=false --enable-hubble=false \
		--enable-health-checking=false --enable-endpoint-health-checking=false \
		--identity-allocation-mode=crd --cni-exclusive=false \
		--lib-dir="${CACHE}/src" \
		--bpf-root="${CILIUM_RUN}/bpffs" --cgroup-root="${CILIUM_RUN}/cgroup2/kscl-cilium" \
		--procfs="${CILIUM_RUN}/proc" \
		$(mode_flags "${mode}")
	echo "${mode}" > "${CLUSTER_DIR}/cilium-mode"
	# Its datapath compiles with clang at start: ~20 s idle, more under load.
	wait_for "cilium-agent healthy (datapath compiled)" 300 agent_ready ||
		die "cilium-agent not ready: ${LOG_DIR}/cilium-agent.log"
	cat > "${CNI_CONF}" <<-EOF
		{
		  "cniVersion": "0.3.1",
		  "name": "cilium",
		  "plugins": [{"type": "cilium-cni", "enable-debug": false}]
		}
	EOF
	log "cilium ${version} up in mode ${mode} on ${NODE_NIC} (netns ${NODE_NETNS})"
}

has_pod_cidr() { [[ -n "$(kubectl_admin get node "${NODE_NAME}" -o jsonpath='{.spec.podCIDR}' 2> /dev/null)" ]]; }

agent_ready() {
	proc_alive cilium-agent || return 1
	api healthz | grep -q '"state":"Ok"' || api healthz | grep -q '"cilium":{[^}]*"state":"Ok"'
}

stop() {
	stop_proc cilium-agent 30
}

case "${1:-}" in
start) start "${2:-tcx}" ;;
restart)
	stop
	start "${2:-tcx}"
	;;
stop) stop ;;
mode) cat "${CLUSTER_DIR}/cilium-mode" ;;
*) die "usage: cilium.sh start|restart MODE | stop | mode" ;;
esac
