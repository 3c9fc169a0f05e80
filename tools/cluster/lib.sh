# shellcheck shell=bash
# Shared settings and helpers of the local single-node cluster scripts
# (up.sh, down.sh, images.sh, deploy.sh). Sourced, never run.
#
# Everything the cluster writes lives in $CLUSTER_DIR (default <repo>/.cluster,
# git-ignored); caches live in <repo>/.cache. Names the cluster gives to host
# objects are fixed so that down.sh can find exactly those and nothing else:
#   bridge  $BRIDGE (ksbr0), its veths veth<8 hex> (CNI bridge plugin),
#   netns   /var/run/netns/cni-<uuid> (containerd),
#   iptables chains KUBE-* (kubelet, kube-proxy) and CNI-* (CNI plugins).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_DIR="${KUBESHAPER_CLUSTER_DIR:-${REPO}/.cluster}"
K8S_VERSION="$(tr -d '[:space:]' < "${REPO}/tools/k8sbin/VERSION")"
K8S_BIN="${KUBESHAPER_K8S_CACHE:-${REPO}/.cache/k8s}/${K8S_VERSION}/bin"
TOOLS_BIN="${REPO}/.cache/cluster-tools"   # reaper, imgtar, image binaries
KUBECTL="${K8S_BIN}/kubectl"
KUBECONFIG_ADMIN="${CLUSTER_DIR}/kubeconfig"

NODE_NAME="ksnode"
BRIDGE="ksbr0"
CNI_NETWORK="kubeshaper-local"
POD_SUBNET="10.244.0.0/24"
CLUSTER_CIDR="10.244.0.0/16"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_API_IP="10.96.0.1"
API_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
PAUSE_IMAGE="kubeshaper/pause:dev"

PID_DIR="${CLUSTER_DIR}/pids"
LOG_DIR="${CLUSTER_DIR}/logs"
BEFORE_DIR="${CLUSTER_DIR}/host-before"
CONTAINERD_SOCK="${CLUSTER_DIR}/containerd/containerd.sock"

# The sysctls the cluster's components may write (ip_forward ourselves;
# kubelet's kernel tunables; kube-proxy's and the CNI plugins' networking
# knobs). down.sh puts back what up.sh recorded.
SYSCTLS=(
	net.ipv4.ip_forward
	net.ipv4.conf.all.forwarding
	net.ipv4.conf.default.forwarding
	net.ipv4.conf.all.route_localnet
	net.ipv4.conf.all.rp_filter
	net.ipv4.conf.default.rp_filter
	net.ipv6.conf.all.forwarding
	net.ipv6.conf.default.forwarding
	net.bridge.bridge-nf-call-iptables
	net.bridge.bridge-nf-call-ip6tables
	net.netfilter.nf_conntrack_max
	net.netfilter.nf_conntrack_tcp_timeout_established
	net.netfilter.nf_conntrack_tcp_timeout_close_wait
	net.netfilter.nf_conntrack_tcp_be_liberal
	net.netfilter.nf_conntrack_udp_timeout
	net.netfilter.nf_conntrack_udp_timeout_stream
	vm.overcommit_memory
	vm.panic_on_oom
	kernel.panic
	kernel.panic_on_oops
	kernel.keys.root_maxkeys
	kernel.keys.root_maxbytes
)

# Host paths the components create outside $CLUSTER_DIR (hard-coded in them):
# removed by down.sh when they did not exist before up.sh.
HOST_PATHS=(
	/run/containerd      # containerd-shim sockets (/run/containerd/s)
	/var/log/containers  # kubelet's container log symlinks
	/var/log/pods
	/var/lib/kubelet     # device-plugins/ (a path fixed in kubelet)
	/etc/kubernetes
	/opt/cni
	/var/lib/cni         # libcni's result cache
)

log() { printf '%s cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, iptables, containerd)"; }

kubectl_admin() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }

# node_ip / node_dev: the IPv4 address and device of the default route
# (else the first global IPv4), which the node registers as InternalIP.
node_dev() {
	local dev
	dev="$(ip -4 route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="dev") {print $(i+1); exit}}')"
	if [[ -z "${dev}" ]]; then
		dev="$(ip -4 -o addr show scope global | awk '{print $2; exit}')"
	fi
	[[ -n "${dev}" ]] || die "no IPv4 interface found for the node address"
	echo "${dev}"
}
node_ip() { ip -4 -o addr show dev "$(node_dev)" scope global | awk '{split($4,a,"/"); print a[1]; exit}'; }

# proc_starttime PID: field 22 of /proc/PID/stat, to tell a PID from a
# re-used one.
proc_starttime() {
	local s
	s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	s="${s##*) }"
	# shellcheck disable=SC2086
	set -- ${s}
	echo "${20}"
}

# start_proc NAME CMD... : start CMD in its own session, output to
# logs/NAME.log, record "PID STARTTIME" in pids/NAME.pid.
start_proc() {
	local name="$1"
	shift
	mkdir -p "${PID_DIR}" "${LOG_DIR}"
	printf '=== %s start: %s\n' "$(date -Is)" "$*" >> "${LOG_DIR}/${name}.log"
	setsid "$@" >> "${LOG_DIR}/${name}.log" 2>&1 < /dev/null &
	local pid=$!
	local st
	st="$(proc_starttime "${pid}")" || die "${name} exited at once: see ${LOG_DIR}/${name}.log"
	echo "${pid} ${st}" > "${PID_DIR}/${name}.pid"
	log "started ${name} (pid ${pid})"
}

# proc_alive NAME: the recorded process still runs (same PID, same start).
proc_alive() {
	local f="${PID_DIR}/$1.pid" pid st
	[[ -f "${f}" ]] || return 1
	read -r pid st < "${f}"
	[[ -n "${pid}" && "$(proc_starttime "${pid}" 2>/dev/null)" == "${st}" ]]
}

# stop_proc NAME [GRACE_SECONDS]: SIGTERM the recorded PID, SIGKILL after
# the grace period; forget it.
stop_proc() {
	local name="$1" grace="${2:-15}" f="${PID_DIR}/$1.pid" pid st i
	[[ -f "${f}" ]] || return 0
	read -r pid st < "${f}"
	if proc_alive "${name}"; then
		kill -TERM "${pid}" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			proc_alive "${name}" || break
			sleep 0.1
		done
		if proc_alive "${name}"; then
			log "${name} (pid ${pid}) ignored SIGTERM for ${grace}s: SIGKILL"
			kill -KILL "${pid}" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				proc_alive "${name}" || break
				sleep 0.1
			done
		fi
		log "stopped ${name} (pid ${pid})"
	fi
	rm -f "${f}"
}

# wait_for DESCRIPTION SECONDS CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
	local what="$1" secs="$2"
	shift 2
	local end=$((SECONDS + secs))
	until "$@" > /dev/null 2>&1; do
		if ((SECONDS >= end)); then
			log "timed out after ${secs}s waiting for ${what}"
			return 1
		fi
		sleep 0.5
	done
}

# iptables_chains FAMILY(4|6): "table chain" for every chain on the host.
iptables_chains() {
	local save="iptables-save"
	[[ "$1" == 6 ]] && save="ip6tables-save"
	command -v "${save}" > /dev/null || return 0
	"${save}" 2>/dev/null | awk '/^\*/{t=substr($1,2)} /^:/{print t, substr($1,2)}'
}
