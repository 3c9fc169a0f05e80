#!/usr/bin/env bash
# make e2e: the real-node end-to-end test (tests/e2e).
#   1. bring the local cluster up unless it is (tools/cluster/up.sh),
#   2. build the images and deploy kubeshaper (tools/cluster/deploy.sh),
#   3. KUBESHAPER_E2E=1 go test ./tests/e2e,
#   4. if this script brought the cluster up, take it down again
#      (tools/cluster/down.sh), which fails if anything is left on the host.
# Timings go to .cluster/timings; the e2e figures to .cluster/e2e-results.txt.
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

started=0
down_if_started() {
	if ((started)); then
		started=0
		"${REPO}/tools/cluster/down.sh"
	fi
}
trap 'rc=$?; down_if_started || rc=1; exit ${rc}' EXIT
trap 'exit 130' INT TERM

t0=${SECONDS}
if ! "${REPO}/tools/cluster/up.sh" --check 2> /dev/null; then
	started=1
	"${REPO}/tools/cluster/up.sh"
fi
t_up=$((SECONDS - t0))

t1=${SECONDS}
"${REPO}/tools/cluster/deploy.sh"
t_deploy=$((SECONDS - t1))

t2=${SECONDS}
rc=0
(cd "${REPO}" && KUBESHAPER_E2E=1 go test -count=1 -v -timeout 20m ./tests/e2e/) || rc=$?
t_test=$((SECONDS - t2))

t3=${SECONDS}
if ((started)); then
	down_if_started || rc=1
fi
t_down=$((SECONDS - t3))
echo "e2e $(date -Is) up=${t_up}s deploy=${t_deploy}s test=${t_test}s down=${t_down}s total=$((SECONDS - t0))s rc=${rc}" | tee -a "${CLUSTER_DIR}/timings" >&2
exit "${rc}"
