#!/usr/bin/env bash
# Deploy kubeshaper to the local cluster: build the agent image (and the
# traffic image the demo and e2e use), import them into containerd, and
# `kubectl apply -k` manifests/ through an overlay in .cluster/deploy that
# pins the image tag just built (kubeshaper/agent:dev-<id>): a changed
# binary is a new tag, hence a DaemonSet rollout. Waits for the rollout.
#
# Usage: tools/cluster/deploy.sh        (make deploy; needs make cluster-up)
set -euo pipefail
# shellcheck source=tools/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
[[ -f "${KUBECONFIG_ADMIN}" ]] && proc_alive kubelet || die "the local cluster is not up: make cluster-up"

"${REPO}/tools/cluster/images.sh" agent traffic
ref="$(cat "${CLUSTER_DIR}/images/agent.ref")"

overlay="${CLUSTER_DIR}/deploy"
mkdir -p "${overlay}"
cat > "${overlay}/kustomization.yaml" <<YAML
# Written by tools/cluster/deploy.sh: manifests/ with the image just built.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="${overlay}" "${REPO}/manifests")
images:
  - name: kubeshaper/agent
    newTag: ${ref##*:}
YAML
kubectl_admin apply -k "${overlay}"
kubectl_admin -n kubeshaper-system rollout status daemonset/kubeshaper-agent --timeout 180s
log "kubeshaper deployed (${ref}); kubectl --kubeconfig ${KUBECONFIG_ADMIN} -n kubeshaper-system get pods -o wide"
