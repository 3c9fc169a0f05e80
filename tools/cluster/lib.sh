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

# The pod network (CNI=bridge|cilium|flannel; make cluster-up CNI=...).
# bridge: the CNI bridge plugin, the node is this machine's own netns.
# cilium, flannel: the node is a network namespace of its own, $NODE_NETNS,
# joined to the host by one veth ($NODE_HOST_LINK here, $NODE_NIC there,
# 10.254.254.0/30). containerd, kubelet, kube-proxy and the CNI's agent run
# in it, so hostNetwork pods, the CNI's devices, routes, iptables rules and
# BPF programs all live there: the CNI's --devices is $NODE_NIC, never this
# machine's uplink. The API server listens on the host end of that veth
# only. up.sh records the choice in $CLUSTER_DIR/cni for the other scripts.
# The recorded CNI wins over $CNI: down.sh, deploy.sh… act on the cluster
# that is up; up.sh calls set_cni with the one asked for.
set_cni() {
	CNI="$1"
	case "${CNI}" in
	bridge | cilium | flannel) ;;
	*) echo "cluster: unknown CNI '${CNI}' (bridge, cilium or flannel)" >&2; exit 2 ;;
	esac
	IN_NODE=()
	if [[ "${CNI}" != bridge ]]; then
		IN_NODE=(nsenter "--net=/var/run/netns/${NODE_NETNS}" --)
	fi
}
REQUESTED_CNI="${CNI:-bridge}"
NODE_NETNS="kscl-node"
NODE_HOST_LINK="kscl-host"
NODE_NIC="kscl-nic"
NODE_LINK_HOST_IP="10.254.254.1"
NODE_LINK_NODE_IP="10.254.254.2"
CILIUM_RUN="/run/kscl-cilium" # its bpffs and cgroup2 mounts, outside /sys
confined() { [[ "${CNI}" != bridge ]]; }
# in_node CMD... / "${IN_NODE[@]}" CMD...: run CMD in the node's network
# namespace (the host's when CNI=bridge). nsenter, not `ip netns exec`: the
# latter remounts /sys, which hides the cgroup and bpf mounts kubelet, runc
# and kubeshaper need.
in_node() { "${IN_NODE[@]}" "$@"; }
if [[ -f "${CLUSTER_DIR}/cni-name" ]]; then
	set_cni "$(cat "${CLUSTER_DIR}/cni-name")"
else
	set_cni "${REQUESTED_CNI}"
fi

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
	/run/cilium          # cilium-agent's state, API socket, CNI log
	/var/lib/cilium      # cilium-agent's other state (lib-dir is the source tree)
	/etc/cni             # written by no one here (conflists live in .cluster); checked
	/run/flannel         # flanneld's subnet.env
	"${CILIUM_RUN}"
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
node_ip() {
	if confined; then
		echo "${NODE_LINK_NODE_IP}"
		return
	fi
	ip -4 -o addr show dev "$(node_dev)" scope global | awk '{split($4,a,"/"); print a[1]; exit}'
}
# api_ip: where kube-apiserver listens: the node's address, or with a
# confined node the host end of its veth (never this machine's uplink).
api_ip() {
	if confined; then
		echo "${NODE_LINK_HOST_IP}"
		return
	fi
	node_ip
}

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

# host_state DIR: what the cluster must leave exactly as it found it on this
# machine's own network namespace, one file per aspect: every host
# interface's tc qdiscs and filters (classic cls_bpf and the rest), the BPF
# programs attached to them (bpftool net: tcx, tc, xdp), routes of every
# table, policy rules, the full iptables rule sets, and every sysctl but the
# few that move by themselves. Files of interfaces that come and go with
# other people's tests are compared only when present on both sides.
host_state() ( # a subshell: grep finding nothing is no error here
	set +e +o pipefail
	local d="$1" l
	mkdir -p "${d}/if"
	ip -o link show | awk -F': ' '{split($2,a,"@"); print a[1]}' | sort > "${d}/links"
	local all
	all="$(sysctl -a 2> /dev/null)"
	while read -r l; do
		{
			tc qdisc show dev "${l}" 2> /dev/null
			tc filter show dev "${l}" ingress 2> /dev/null | sed 's/ id [0-9]*/ id N/; s/ tag [0-9a-f]*//'
			tc filter show dev "${l}" egress 2> /dev/null | sed 's/ id [0-9]*/ id N/; s/ tag [0-9a-f]*//'
			if command -v bpftool > /dev/null; then
				bpftool net show dev "${l}" 2> /dev/null | sed 's/prog_id [0-9]*/prog_id N/g; s/link_id [0-9]*/link_id N/g; s/id [0-9]*/id N/g'
			fi
			grep -E "^net\.ipv[46]\.(conf|neigh)\.${l//./\.} " <<< "${all}" | sort
		} > "${d}/if/${l}"
	done < "${d}/links"
	ip -4 route show table all 2> /dev/null | sort > "${d}/routes4"
	ip -6 route show table all 2> /dev/null | sort > "${d}/routes6"
	ip -4 rule show 2> /dev/null > "${d}/rules4"
	ip -6 rule show 2> /dev/null > "${d}/rules6"
	if command -v iptables-save > /dev/null; then
		iptables-save 2> /dev/null | iptables_rules > "${d}/iptables4"
		ip6tables-save 2> /dev/null | iptables_rules > "${d}/iptables6"
	fi
	grep -vE '^(fs\.(dentry-state|file-nr|inode-nr|inode-state|aio-nr|quota\..*)|kernel\.(ns_last_pid|pty\.nr|perf_event_max_sample_rate|random\..*)|net\.netfilter\.nf_conntrack_count|net\.ipv[46]\.(conf|neigh)\.) ' <<< "${all}" |
		awk '/^[A-Za-z0-9_.\/-]+ = / {n[$1]++; l[$1] = $0} END {for (k in n) if (n[k] == 1) print l[k]}' | sort > "${d}/sysctl"
	return 0
)

# host_state_diff BEFORE AFTER: one line per difference ("" when none).
# Routes and interfaces of links that exist on one side only (someone
# else's test veths) are left out.
host_state_diff() (
	set +e +o pipefail
	local b="$1" a="$2" f l both
	both="$(comm -12 "${b}/links" "${a}/links")"
	for l in ${both}; do
		if ! diff -q "${b}/if/${l}" "${a}/if/${l}" > /dev/null 2>&1; then
			diff "${b}/if/${l}" "${a}/if/${l}" | grep '^[<>]' | sed "s#^#interface ${l}: #"
		fi
	done
	# sysctls: values of the keys on both sides (a module loaded meanwhile
	# adds keys; that is not a change of the host's settings).
	if [[ -f "${b}/sysctl" && -f "${a}/sysctl" ]]; then
		join -t '=' -j 1 <(sed 's/ = /=/' "${b}/sysctl") <(sed 's/ = /=/' "${a}/sysctl") |
			awk -F'=' '$2 != $3 {print "sysctl: " $1 " was " $2 ", now " $3}'
	fi
	for f in routes4 routes6 rules4 rules6 iptables4 iptables6; do
		[[ -f "${b}/${f}" && -f "${a}/${f}" ]] || continue
		diff <(only_links "${both}" < "${b}/${f}") <(only_links "${both}" < "${a}/${f}") | grep '^[<>]' | sed "s#^#${f}: #"
	done
	return 0
)

# only_links LINKS: drop route lines naming a device not in LINKS.
only_links() {
	awk -v keep=" $(echo $1) " '{
		for (i = 1; i < NF; i++) if ($i == "dev" && !index(keep, " " $(i+1) " ")) next
		print
	}'
}

# iptables_rules: iptables-save output reduced to what the host's rule set
# means: every rule and user chain with its table, and built-in chains'
# policies when not ACCEPT (a table that merely became visible because
# someone listed it, empty, is no change).
iptables_rules() {
	awk '/^\*/ {t = substr($1, 2); next}
		/^:/ {c = substr($1, 2)
			if (c ~ /^(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING)$/) { if ($2 != "ACCEPT") print t, "policy", c, $2 }
			else print t, "chain", c
			next}
		/^-A / {print t, $0}' | sort
}
