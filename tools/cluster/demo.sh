#!/usr/bin/env bash
# make demo: from a bare machine to a shaped pod, measured.
#   1. install what is missing (tools/deps.sh demo: apt packages, Go),
#   2. bring the local single-node cluster up (tools/cluster/up.sh; the
#      first run builds Kubernetes from the Go module proxy, ~5-7 min),
#   3. build and deploy kubeshaper (tools/cluster/deploy.sh),
#   4. run tools/demo: two pods, throughput and UDP loss unshaped, then with
#      kubeshaper.io/bandwidth: "50mbps egress" and kubeshaper.io/loss:
#      "uniform egress 1%", a before/after table and docs/demo.png.
# The cluster stays up for you to play with; `make cluster-down` takes it
# down (DEMO_DOWN=1 make demo does it at the end).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/deps.sh
source "${here}/../deps.sh" demo
# shellcheck source=tools/cluster/lib.sh
source "${here}/lib.sh"
need_root

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"${here}/up.sh"
"${here}/deploy.sh"
rc=0
(cd "${REPO}" && go run ./tools/demo "$@") || rc=$?
if [[ "${DEMO_DOWN:-0}" == 1 ]]; then
	"${here}/down.sh" || rc=1
else
	cat >&2 <<-MSG

		The cluster is still up. Try:
		  ${KUBECTL} --kubeconfig ${KUBECONFIG_ADMIN} get pods -A -o wide
		  ${KUBECTL} --kubeconfig ${KUBECONFIG_ADMIN} -n kubeshaper-system exec ds/kubeshaper-agent -- kubeshaper status
		Take it down (and restore the host) with: make cluster-down
	MSG
fi
exit "${rc}"
