#!/usr/bin/env bash
# flannel as the local cluster's CNI (make cluster-up CNI=flannel): flanneld
# (VXLAN backend, subnets from the Kubernetes API: the node's podCIDR) in
# the node's netns on its NIC ($NODE_NIC), then the conflist flannel's CNI
# plugin would delegate (bridge cni0 + host-local on the node's subnet from
# /run/flannel/subnet.env; that plugin is not served by the Go module proxy,
# tools/flannel/build.sh). No IP masquerading.
#
# Usage: tools/cluster/flannel.sh start | stop
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

version="$(tr -d '[:space:]' < "${REPO}/tools/flannel/VERSION")"
CACHE="${KUBESHAPER_FLANNEL_CACHE:-/var/cache/kubeshaper/flannel}/${version}"

has_pod_cidr() { [[ -n "$(kubectl_admin get node "${NODE_NAME}" -o jsonpath='{.spec.podCIDR}' 2> /dev/null)" ]]; }
subnet_ready() { proc_alive flanneld && [[ -s /run/flannel/subnet.env ]]; }

start() {
	[[ -x "${CACHE}/bin/flanneld" ]] || "${REPO}/tools/flannel/build.sh"
	wait_for "node ${NODE_NAME} with a podCIDR" 120 has_pod_cidr || die "node ${NODE_NAME} has no podCIDR"
	mkdir -p "${CLUSTER_DIR}/flannel"
	rm -f /run/flannel/subnet.env
	cat > "${CLUSTER_DIR}/flannel/net-conf.json" <<-EOF
		{"Network": "${CLUSTER_CIDR}", "EnableIPv6": false, "Backend": {"Type": "vxlan"}}
	EOF
	start_proc flanneld ip netns exec "${NODE_NETNS}" env NODE_NAME="${NODE_NAME}" \
		"${CACHE}/bin/flanneld" --kube-subnet-mgr --kubeconfig-file="${KUBECONFIG_ADMIN}" \
		--iface="${NODE_NIC}" --net-config-path="${CLUSTER_DIR}/flannel/net-conf.json" \
		--subnet-file=/run/flannel/subnet.env --ip-masq=false
	wait_for "flanneld's subnet.env" 120 subnet_ready || die "flanneld not ready: ${LOG_DIR}/flanneld.log"
	# shellcheck disable=SC1091
	source /run/flannel/subnet.env
	# subnet.env names the gateway (10.244.0.1/24); host-local wants the network.
	subnet="$(python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1], strict=False))' "${FLANNEL_SUBNET}")"
	cat > "${CLUSTER_DIR}/cni/net.d/10-flannel.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "cbr0",
		  "plugins": [{
		    "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
		    "ipMasq": false, "hairpinMode": true, "mtu": ${FLANNEL_MTU},
		    "ipam": {"type": "host-local", "ranges": [[{"subnet": "${subnet}"}]],
		             "routes": [{"dst": "${FLANNEL_NETWORK}"}], "dataDir": "${CLUSTER_DIR}/cni/ipam"}
		  }]
		}
	EOF
	log "flannel ${version} up: subnet ${FLANNEL_SUBNET}, mtu ${FLANNEL_MTU}, on ${NODE_NIC} (netns ${NODE_NETNS})"
}

case "${1:-}" in
start) start ;;
stop) stop_proc flanneld ;;
*) die "usage: flannel.sh start | stop" ;;
esac
