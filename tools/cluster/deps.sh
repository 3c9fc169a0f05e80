#!/usr/bin/env bash
# What the local cluster needs: tools/deps.sh's "cluster" group (the one
# dependency list of the project). Kept for scripts that run or source it.
# shellcheck source=tools/deps.sh
if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
	exec "$(dirname "${BASH_SOURCE[0]}")/../deps.sh" cluster
else
	source "$(dirname "${BASH_SOURCE[0]}")/../deps.sh" cluster || return 1
fi
