#!/usr/bin/env bash
# Bring up a single-node Kubernetes cluster on this machine:
#   etcd (Debian) → kube-apiserver → containerd (Debian, under tools/reaper)
#   → kube-controller-manager, kube-scheduler → kubelet, kube-proxy,
# pods on a CNI bridge (Debian's containernetworking-plugins), no registry:
# the sandbox image is built here (tools/cluster/images.sh pause).
#
# Usage: tools/cluster/up.sh            (make cluster-up [CNI=cilium|flannel])
#        tools/cluster/up.sh --check    (exit 0 if it is up, 1 if not)
#
# CNI=cilium / CNI=flannel: the pod network is that CNI instead of the
# bridge conflist, and the node is a network namespace of its own
# (lib.sh: $NODE_NETNS) so the CNI cannot touch this machine's uplink, routes
# or iptables. Cilium is built from source (tools/cilium/build.sh) and runs
# without its operator (tools/cluster/cilium.sh; CILIUM_MODE=tcx|legacy|
# hostrouting).
#
# Writes the admin kubeconfig to .cluster/kubeconfig. Idempotent: a cluster
# that is already up is left alone; a half-dead one is taken down first.
# Before touching anything it records the host's state in
# .cluster/host-before/ (links, netns, iptables chains, sysctls, paths,
# cgroups), which tools/cluster/down.sh restores and verifies.
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

components_of() {
	echo etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet kube-proxy
	case "$1" in
	cilium) echo cilium-agent ;;
	flannel) echo flanneld ;;
	esac
}

all_up() {
	local c
	for c in $(components_of "${CNI}"); do proc_alive "${c}" || return 1; done
	[[ -f "${KUBECONFIG_ADMIN}" ]]
}

if [[ "${1:-}" == "--check" ]]; then # exit status only: is it up?
	all_up
	exit
fi
if all_up; then
	[[ "${CNI}" == "${REQUESTED_CNI}" ]] || die "a cluster with CNI ${CNI} is up: make cluster-down first"
	log "cluster already up (CNI ${CNI}, kubeconfig ${KUBECONFIG_ADMIN})"
	exit 0
fi
if [[ -d "${PID_DIR}" || -d "${BEFORE_DIR}" ]]; then
	log "a previous cluster is partly up or was not taken down: taking it down first"
	"${REPO}/tools/cluster/down.sh"
fi
set_cni "${REQUESTED_CNI}"
components=($(components_of "${CNI}"))

# From here on, a failure takes down whatever was started (logs stay).
on_exit() {
	local rc=$?
	if ((rc != 0)) && [[ -d "${PID_DIR}" || -d "${BEFORE_DIR}" ]]; then
		log "cluster-up failed: taking down what was started (logs in ${LOG_DIR})"
		"${REPO}/tools/cluster/down.sh" || true
	fi
	exit "${rc}"
}
trap on_exit EXIT

t0=${SECONDS}
if [[ -d "${LOG_DIR}" ]]; then # keep the previous run's logs one round
	rm -rf "${LOG_DIR}.prev"
	mv "${LOG_DIR}" "${LOG_DIR}.prev"
fi

# ------------------------------------------------------------ preflight
missing=()
for b in containerd ctr runc etcd iptables iptables-save ip6tables-save openssl ip nsenter; do
	command -v "${b}" > /dev/null || missing+=("${b}")
done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=("/usr/lib/cni (containernetworking-plugins)")
if ((${#missing[@]})); then
	die "missing: ${missing[*]} — apt-get install --no-install-recommends containerd runc containernetworking-plugins etcd-server iptables openssl iproute2 (tools/deps.sh cluster does it)"
fi
mountpoint -q /sys/fs/bpf || die "/sys/fs/bpf is not mounted (make bpffs)"

log "Kubernetes ${K8S_VERSION} binaries (built once from the Go module proxy, cached in ${K8S_BIN})"
tb=${SECONDS}
"${REPO}/tools/k8sbin/build.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
case "${CNI}" in
cilium) "${REPO}/tools/cilium/build.sh" ;;
flannel) "${REPO}/tools/flannel/build.sh" ;;
esac
build_secs=$((SECONDS - tb))

mkdir -p "${TOOLS_BIN}"
(cd "${REPO}" && go build -o "${TOOLS_BIN}/reaper" ./tools/reaper)

NODE_IP="$(node_ip)"
API_IP="$(api_ip)"
NODE_DEV="$(node_dev)"
MTU="$(cat "/sys/class/net/${NODE_DEV}/mtu")"
if confined; then
	NODE_DEV="${NODE_NIC}"
	MTU=1500
fi
log "node ${NODE_NAME} (CNI ${CNI}): ${NODE_IP} on ${NODE_DEV} (mtu ${MTU}), API at ${API_IP}"

# ------------------------------------------------------------ host snapshot
mkdir -p "${BEFORE_DIR}" "${PID_DIR}" "${LOG_DIR}"
ip -o link show | awk -F': ' '{split($2,a,"@"); print a[1]}' | sort > "${BEFORE_DIR}/links"
ls -1 /var/run/netns 2>/dev/null | sort > "${BEFORE_DIR}/netns" || true
iptables_chains 4 | sort > "${BEFORE_DIR}/chains4"
iptables_chains 6 | sort > "${BEFORE_DIR}/chains6"
if command -v nft > /dev/null; then nft list tables 2>/dev/null | sort > "${BEFORE_DIR}/nft-tables"; fi
: > "${BEFORE_DIR}/sysctl"
for k in "${SYSCTLS[@]}"; do
	v="$(sysctl -n "${k}" 2>/dev/null | tr '\t' ' ')" || continue
	printf '%s=%s\n' "${k}" "${v}" >> "${BEFORE_DIR}/sysctl"
done
: > "${BEFORE_DIR}/paths"
for p in "${HOST_PATHS[@]}"; do
	[[ -e "${p}" ]] && echo "${p}" >> "${BEFORE_DIR}/paths"
done
find /sys/fs/bpf/kubeshaper -maxdepth 1 -mindepth 1 2>/dev/null | sort > "${BEFORE_DIR}/bpffs" || true
[[ -d /sys/fs/bpf/kubeshaper ]] && echo "/sys/fs/bpf/kubeshaper" >> "${BEFORE_DIR}/bpffs"
for h in /sys/fs/cgroup/*/; do
	[[ -d "${h}kubepods" ]] && echo "${h}kubepods"
done > "${BEFORE_DIR}/cgroups" || true
findmnt -rn -o TARGET | sort > "${BEFORE_DIR}/mounts"
host_state "${BEFORE_DIR}/host" # down.sh diffs the host against this
echo "${CNI}" > "${CLUSTER_DIR}/cni-name"

# ------------------------------------------------------------ host settings
if confined; then
	# The node: a netns with one veth to the host. The host routes the pod
	# CIDR to it (so the API server can answer pods) but does not forward:
	# pods reach this machine's API server and nothing beyond.
	ip netns add "${NODE_NETNS}"
	ip link add "${NODE_HOST_LINK}" mtu "${MTU}" type veth peer name "${NODE_NIC}" mtu "${MTU}" netns "${NODE_NETNS}"
	ip addr add "${NODE_LINK_HOST_IP}/30" dev "${NODE_HOST_LINK}"
	ip link set "${NODE_HOST_LINK}" up
	ip -n "${NODE_NETNS}" link set lo up
	ip -n "${NODE_NETNS}" addr add "${NODE_LINK_NODE_IP}/30" dev "${NODE_NIC}"
	ip -n "${NODE_NETNS}" link set "${NODE_NIC}" up
	ip -n "${NODE_NETNS}" route add default via "${NODE_LINK_HOST_IP}"
	ip route add "${CLUSTER_CIDR}" via "${NODE_LINK_NODE_IP}" dev "${NODE_HOST_LINK}"
	in_node sysctl -qw net.ipv4.ip_forward=1
else
	sysctl -qw net.ipv4.ip_forward=1
fi
# Pods' netns live in /var/run/netns; the agent mounts it with
# HostToContainer propagation, which needs a shared mount there (what
# `ip netns add` sets up). Make it one if it is not, and undo it on down.
mkdir -p /var/run/netns
if ! mountpoint -q /var/run/netns; then
	mount --bind /var/run/netns /var/run/netns
	echo bind > "${BEFORE_DIR}/netns-mount"
fi
if [[ "$(findmnt -rn -o PROPAGATION --target /var/run/netns | head -1)" != shared* ]]; then
	mount --make-shared /var/run/netns
	echo private >> "${BEFORE_DIR}/netns-mount"
fi

# ------------------------------------------------------------ PKI + tokens
PKI="${CLUSTER_DIR}/pki"
mkdir -p "${PKI}"
(
	cd "${PKI}"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -keyout ca.key -out ca.crt -subj "/CN=kubeshaper-local-ca" 2> /dev/null
	cat > apiserver.ext <<-EOF
		basicConstraints=CA:FALSE
		keyUsage=digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth
		subjectAltName=IP:127.0.0.1,IP:${NODE_IP},IP:${API_IP},IP:${SERVICE_API_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
	EOF
	openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2> /dev/null
	openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile apiserver.ext -out apiserver.crt 2> /dev/null
	openssl genrsa -out sa.key 2048 2> /dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2> /dev/null
	chmod 600 ./*.key
)
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
declare -A TOKENS=(
	[admin]="$(tok)" [kube-controller-manager]="$(tok)" [kube-scheduler]="$(tok)"
	[kubelet]="$(tok)" [kube-proxy]="$(tok)"
)
{
	echo "${TOKENS[admin]},admin,admin,system:masters"
	echo "${TOKENS[kube-controller-manager]},system:kube-controller-manager,kcm"
	echo "${TOKENS[kube-scheduler]},system:kube-scheduler,scheduler"
	echo "${TOKENS[kubelet]},system:node:${NODE_NAME},kubelet,system:nodes"
	echo "${TOKENS[kube-proxy]},system:kube-proxy,kube-proxy"
} > "${PKI}/tokens.csv"
chmod 600 "${PKI}/tokens.csv"

ca_b64="$(base64 -w0 < "${PKI}/ca.crt")"
write_kubeconfig() { # FILE USER TOKEN
	cat > "$1" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: kubeshaper-local
		  cluster:
		    server: https://${API_IP}:${API_PORT}
		    certificate-authority-data: ${ca_b64}
		users:
		- name: $2
		  user:
		    token: $3
		contexts:
		- name: kubeshaper-local
		  context: {cluster: kubeshaper-local, user: $2}
		current-context: kubeshaper-local
	EOF
	chmod 600 "$1"
}
CONF="${CLUSTER_DIR}/conf"
mkdir -p "${CONF}"
for u in kube-controller-manager kube-scheduler kubelet kube-proxy; do
	write_kubeconfig "${CONF}/${u}.kubeconfig" "${u}" "${TOKENS[${u}]}"
done

# ------------------------------------------------------------ etcd
mkdir -p "${CLUSTER_DIR}/etcd"
start_proc etcd etcd --name "${NODE_NAME}" --data-dir "${CLUSTER_DIR}/etcd" \
	--listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
	--advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
	--listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
	--initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
	--initial-cluster "${NODE_NAME}=http://127.0.0.1:${ETCD_PEER_PORT}" \
	--log-level warn
etcd_healthy() { proc_alive etcd && bash -c "exec 3<>/dev/tcp/127.0.0.1/${ETCD_CLIENT_PORT}"; }
wait_for "etcd" 30 etcd_healthy || die "etcd did not come up: ${LOG_DIR}/etcd.log"

# ------------------------------------------------------------ kube-apiserver
start_proc kube-apiserver "${K8S_BIN}/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
	--bind-address "${API_IP}" --advertise-address "${API_IP}" --secure-port "${API_PORT}" \
	--cert-dir "${PKI}" --tls-cert-file "${PKI}/apiserver.crt" --tls-private-key-file "${PKI}/apiserver.key" \
	--client-ca-file "${PKI}/ca.crt" --token-auth-file "${PKI}/tokens.csv" \
	--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
	--service-cluster-ip-range "${SERVICE_CIDR}" --allow-privileged=true \
	--kubelet-preferred-address-types InternalIP --profiling=false --v 1
write_kubeconfig "${KUBECONFIG_ADMIN}" admin "${TOKENS[admin]}"
wait_for "kube-apiserver /readyz" 90 kubectl_admin get --raw /readyz || die "kube-apiserver not ready: ${LOG_DIR}/kube-apiserver.log"
log "kube-apiserver ready at https://${API_IP}:${API_PORT}"

# ------------------------------------------------------------ containerd
CD="${CLUSTER_DIR}/containerd"
mkdir -p "${CD}/root" "${CD}/state" "${CD}/opt" "${CLUSTER_DIR}/runc" "${CLUSTER_DIR}/cni/net.d" "${CLUSTER_DIR}/cni/ipam"
cat > "${CD}/config.toml" <<EOF
version = 2
root = "${CD}/root"
state = "${CD}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${CONTAINERD_SOCK}"
[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "${CD}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this runc cannot lower the
  # sandbox's oom_score_adj and every sandbox fails ("can't get final
  # child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${CLUSTER_DIR}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CLUSTER_DIR}/cni/bin"
    conf_dir = "${CLUSTER_DIR}/cni/net.d"
    max_conf_num = 1
EOF
# The plugins containerd may run: Debian's, and the CNI's own.
mkdir -p "${CLUSTER_DIR}/cni/bin"
ln -sf /usr/lib/cni/* "${CLUSTER_DIR}/cni/bin/"
if [[ "${CNI}" == bridge ]]; then
cat > "${CLUSTER_DIR}/cni/net.d/10-${CNI_NETWORK}.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "${CNI_NETWORK}",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "mtu": ${MTU},
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${POD_SUBNET}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "${CLUSTER_DIR}/cni/ipam"
      }
    }
  ]
}
EOF
fi # the other CNIs' conflists are written once their agent is ready
start_proc containerd "${IN_NODE[@]}" "${TOOLS_BIN}/reaper" -grace 10s -- containerd --config "${CD}/config.toml" --log-level warn
wait_for "containerd" 30 ctr -a "${CONTAINERD_SOCK}" version || die "containerd did not come up: ${LOG_DIR}/containerd.log"
"${REPO}/tools/cluster/images.sh" pause

# ------------------------------------------------------------ controllers
start_proc kube-controller-manager "${K8S_BIN}/kube-controller-manager" \
	--kubeconfig "${CONF}/kube-controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false \
	--allocate-node-cidrs --cluster-cidr "${CLUSTER_CIDR}" --node-cidr-mask-size 24 \
	--service-cluster-ip-range "${SERVICE_CIDR}" \
	--root-ca-file "${PKI}/ca.crt" --service-account-private-key-file "${PKI}/sa.key" \
	--use-service-account-credentials --v 1
start_proc kube-scheduler "${K8S_BIN}/kube-scheduler" \
	--kubeconfig "${CONF}/kube-scheduler.kubeconfig" --bind-address 127.0.0.1 --leader-elect=false --v 1

# ------------------------------------------------------------ kubelet
KL="${CLUSTER_DIR}/kubelet"
mkdir -p "${KL}" "${LOG_DIR}/pods"
cat > "${CONF}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
podLogsDir: ${LOG_DIR}/pods
resolvConf: /etc/resolv.conf
serializeImagePulls: false
registerNode: true
nodeStatusReportFrequency: 10s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
start_proc kubelet "${IN_NODE[@]}" "${K8S_BIN}/kubelet" \
	--config "${CONF}/kubelet.yaml" --kubeconfig "${CONF}/kubelet.kubeconfig" \
	--root-dir "${KL}" --cert-dir "${KL}/pki" --hostname-override "${NODE_NAME}" --node-ip "${NODE_IP}" --v 1

# ------------------------------------------------------------ kube-proxy
cat > "${CONF}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${CONF}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${NODE_NAME}
clusterCIDR: ${CLUSTER_CIDR}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start_proc kube-proxy "${IN_NODE[@]}" "${K8S_BIN}/kube-proxy" --config "${CONF}/kube-proxy.yaml" --v 1

# ------------------------------------------------------------ the CNI
case "${CNI}" in
cilium) "${REPO}/tools/cluster/cilium.sh" start "${CILIUM_MODE:-tcx}" ;;
flannel) "${REPO}/tools/cluster/flannel.sh" start ;;
esac

# ------------------------------------------------------------ ready?
node_ready() {
	[[ "$(kubectl_admin get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_for "node ${NODE_NAME} Ready" 120 node_ready || die "node not Ready: ${LOG_DIR}/kubelet.log"
wait_for "default ServiceAccount" 60 kubectl_admin -n default get serviceaccount default || die "no default ServiceAccount"
wait_for "kube-root-ca.crt" 60 kubectl_admin -n default get configmap kube-root-ca.crt || die "no kube-root-ca.crt"
for c in "${components[@]}"; do
	proc_alive "${c}" || die "${c} exited: ${LOG_DIR}/${c}.log"
done

total=$((SECONDS - t0))
echo "up $(date -Is) total=${total}s k8s-build=${build_secs}s" >> "${CLUSTER_DIR}/timings"
log "cluster up in ${total}s (of which Kubernetes builds ${build_secs}s); node ${NODE_NAME} Ready"
log "kubeconfig: ${KUBECONFIG_ADMIN}   e.g. ${KUBECTL} --kubeconfig ${KUBECONFIG_ADMIN} get pods -A"
