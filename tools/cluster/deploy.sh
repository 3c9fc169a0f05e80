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
# E2E_INSTALL=helm installs with the Helm chart (manifests/helm/kubeshaper;
# helm built once from the Go module proxy, tools/helmbin) instead, with the
# same image. The way it installed and the exact command are recorded in
# the overlay directory (install-mode, install.sh) for tests/e2e's
# uninstall/reinstall step.
install="${E2E_INSTALL:-kustomize}"
case "${install}" in
kustomize)
	printf '#!/bin/sh\nexec %q --kubeconfig %q apply -k %q\n' "${KUBECTL}" "${KUBECONFIG_ADMIN}" "${overlay}" > "${overlay}/install.sh"
	;;
helm)
	helm="$("${REPO}/tools/helmbin/build.sh")"
	# Objects a kustomize install made are not Helm's to adopt: remove
	# them first (rules stay in effect: --cleanup-on-exit=false).
	if kubectl_admin -n kubeshaper-system get daemonset kubeshaper-agent > /dev/null 2>&1 &&
		[[ -z "$(kubectl_admin -n kubeshaper-system get daemonset kubeshaper-agent -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" ]]; then
		log "removing the kustomize install before installing with Helm"
		kubectl_admin delete -k "${overlay}" --wait=true --timeout 120s
	fi
	printf '#!/bin/sh\nexec %q upgrade --install kubeshaper %q --kubeconfig %q --namespace kubeshaper-system --create-namespace --set image.tag=%q --wait --timeout 180s\n' \
		"${helm}" "${REPO}/manifests/helm/kubeshaper" "${KUBECONFIG_ADMIN}" "${ref##*:}" > "${overlay}/install.sh"
	;;
*) die "E2E_INSTALL=${install}: want kustomize or helm" ;;
esac
chmod +x "${overlay}/install.sh"
echo "${install}" > "${overlay}/install-mode"
"${overlay}/install.sh"
kubectl_admin -n kubeshaper-system rollout status daemonset/kubeshaper-agent --timeout 180s
log "kubeshaper deployed with ${install} (${ref}); kubectl --kubeconfig ${KUBECONFIG_ADMIN} -n kubeshaper-system get pods -o wide"
