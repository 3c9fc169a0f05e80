#!/usr/bin/env bash
# make e2e-cni: kubeshaper under real CNIs — the README's CNI matrix.
# For each CNI: bring the local cluster up with it (tools/cluster/up.sh
# CNI=...), deploy kubeshaper, run tests/e2ecni once per mode (Cilium: tcx,
# legacy tc, BPF host routing — the agent restarted between modes), take
# the cluster down (down.sh verifies the host is exactly as before), and
# write docs/bench/cni.json, from which `make readme-figures` renders the
# matrix. Not part of `make test`: a cold Cilium build alone takes ~5 min
# and the three modes ~10 more.
#
# Usage: tools/cluster/e2e-cni.sh [ROW...]
#   ROW: bridge | cilium | cilium/tcx | cilium/legacy | cilium/hostrouting | flannel
#   (default: bridge cilium flannel; "cilium" is its three modes)
#
# Holds /tmp/ks-cluster.lock throughout (one real cluster on this machine at
# a time) and /tmp/ks-bench.lock around each measurement (E2E_CNI_BENCH_LOCK=0:
# not, for a trial run whose figures are not kept).
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

rows=("$@")
((${#rows[@]})) || rows=(bridge cilium flannel)
out_dir="${CLUSTER_DIR}/e2e-cni"
mkdir -p "${out_dir}"
exec 8> /tmp/ks-cluster.lock
if ! flock -n 8; then
	log "waiting for the cluster lock (another real cluster is up on this machine)"
	flock 8
fi
if "${REPO}/tools/cluster/up.sh" --check 2> /dev/null; then
	die "a cluster is already up (make cluster-down first): e2e-cni brings up its own per CNI"
fi

declare -A modes=([bridge]="-" [cilium]="tcx legacy hostrouting" [flannel]="-")
declare -a order=()
declare -A want=()
for r in "${rows[@]}"; do
	cni="${r%%/*}"
	[[ -n "${modes[${cni}]:-}" ]] || die "unknown row '${r}'"
	[[ -n "${want[${cni}]+x}" ]] || order+=("${cni}")
	if [[ "${r}" == */* ]]; then
		want[${cni}]="${want[${cni}]:-} ${r#*/}"
	else
		want[${cni}]="${modes[${cni}]}"
	fi
done

cilium_detail() {
	curl -sf --max-time 3 --unix-socket /var/run/cilium/cilium.sock http://localhost/v1/healthz |
		python3 -c 'import json,sys; s=json.load(sys.stdin); r=s.get("routing",{}); k=s.get("kube-proxy-replacement",{}); print("host routing %s, kube-proxy replacement %s" % (r.get("intra-host-routing-mode","?"), k.get("mode","?")))' 2> /dev/null || echo "?"
}

rc=0
for cni in "${order[@]}"; do
	# shellcheck disable=SC2206
	ms=(${want[${cni}]})
	log "=== CNI ${cni}: modes ${ms[*]}"
	first="${ms[0]}"
	[[ "${first}" == - ]] && first=tcx
	if ! CNI="${cni}" CILIUM_MODE="${first}" "${REPO}/tools/cluster/up.sh"; then
		log "cluster-up with CNI ${cni} failed"
		for m in "${ms[@]}"; do
			printf '{"cni":"%s","mode":"%s","error":"cluster-up failed: see .cluster/logs"}\n' "${cni}" "${m}" > "${out_dir}/${cni}-${m}.json"
		done
		rc=1
		continue
	fi
	ok=1
	"${REPO}/tools/cluster/deploy.sh" || ok=0
	for m in "${ms[@]}"; do
		((ok)) || break
		detail="" restart=""
		if [[ "${cni}" == cilium ]]; then
			restart="CNI=cilium ${REPO}/tools/cluster/cilium.sh restart ${m}"
			if [[ "$(CNI=cilium "${REPO}/tools/cluster/cilium.sh" mode)" != "${m}" ]]; then
				CNI=cilium "${REPO}/tools/cluster/cilium.sh" restart "${m}" || { rc=1; continue; }
			fi
			detail="cilium $(tr -d '[:space:]' < "${REPO}/tools/cilium/VERSION"): $(cilium_detail)"
		fi
		log "--- ${cni}/${m}: ${detail}"
		peer="${NODE_LINK_HOST_IP}"
		[[ "${cni}" == bridge ]] && peer="${POD_SUBNET%.*}.1"
		netns=""
		[[ "${cni}" != bridge ]] && netns="${NODE_NETNS}"
		benchlock=(flock /tmp/ks-bench.lock)
		if [[ "${E2E_CNI_BENCH_LOCK:-1}" == 0 ]]; then
			benchlock=()
			detail="${detail:+${detail}; }bench lock not held"
		fi
		(cd "${REPO}" && "${benchlock[@]}" env KUBESHAPER_E2E_CNI="${cni}" KUBESHAPER_E2E_CNI_MODE="${m}" \
			KUBESHAPER_E2E_CNI_DETAIL="${detail}" KUBESHAPER_E2E_PEER_IP="${peer}" KUBESHAPER_NODE_NETNS="${netns}" \
			KUBESHAPER_E2E_CNI_OUT="${out_dir}/${cni}-${m}.json" KUBESHAPER_E2E_CNI_RESTART="${restart}" \
			go test -count=1 -v -timeout 15m -run TestCNIMatrix ./tests/e2ecni/) 2>&1 | tee "${out_dir}/${cni}-${m}.log" || rc=1
	done
	if ! "${REPO}/tools/cluster/down.sh"; then
		rc=1
	fi
	cp "${CLUSTER_DIR}/down-report" "${out_dir}/${cni}-down-report" 2> /dev/null || true
done

# docs/bench/cni.json: every row measured so far (rows not re-run keep
# their previous file), with the host check of each CNI's cluster-down.
python3 - "${out_dir}" "${REPO}/docs/bench/cni.json" <<'PYEOF'
import json, os, sys, glob
d, out = sys.argv[1], sys.argv[2]
runs, downs = [], {}
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    try:
        runs.append(json.load(open(f)))
    except Exception as e:
        runs.append({"file": os.path.basename(f), "error": str(e)})
for f in sorted(glob.glob(os.path.join(d, "*-down-report"))):
    downs[os.path.basename(f)[:-len("-down-report")]] = open(f).read().strip()
order = {"bridge": 0, "flannel": 1, "cilium": 2}
mo = {"-": 0, "tcx": 1, "legacy": 2, "hostrouting": 3}
runs.sort(key=lambda r: (order.get(r.get("cni"), 9), mo.get(r.get("mode"), 9)))
json.dump({"runs": runs, "cluster_down": downs}, open(out, "w"), indent=2)
open(out, "a").write("\n")
PYEOF
log "wrote docs/bench/cni.json (run make readme-figures for the README matrix)"
exit "${rc}"
