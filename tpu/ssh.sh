#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A shell on a worker, or a command on one or every worker (for looking around and fixing).
#
#   tpu/ssh.sh                      # interactive shell on worker 0
#   tpu/ssh.sh 1                    # ... on worker 1
#   tpu/ssh.sh all COMMAND...       # COMMAND (a bash command line) on every worker
#   tpu/ssh.sh 0 tail -f jaxdsm/results/tpu-logs/latest.log
#   tpu/ssh.sh all bash jaxdsm/tpu/worker.sh tpu-users      # who holds the TPU
#   tpu/ssh.sh all bash jaxdsm/tpu/worker.sh tpu-release    # stop them, drop a stale lock
#
# Not retried. Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

worker=${1:-0}
if [[ $# -gt 0 ]]; then shift; fi
[[ $worker == all || $worker =~ ^[0-9]+$ ]] || die "worker must be a number or all, not '$worker'"
if [[ $# -eq 0 ]]; then
    [[ $worker != all ]] || die "an interactive shell needs one worker"
    exec "${SSH_GCLOUD[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker="$worker" \
        ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
fi
on_workers "$worker" "$*"
