#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 6: delete the TPU of tpu/env and its queued resource, then list what is left in the
# zone. Billing stops only when the TPU is deleted. Everything on the workers is lost: run
# tpu/fetch.sh first.
#
#   tpu/delete.sh [--yes]
#
# Idempotent: succeeds when they are already gone (an error other than "not found" fails it).
# Retried with backoff. Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

yes=0
case ${1:-} in
    -y | --yes) yes=1 ;;
    "") ;;
    *) die "usage: tpu/delete.sh [--yes]" ;;
esac

delete_queued() {  # --force deletes the queued resource's node too
    local state
    state=$(queued_state) || return 1
    [[ $state != ABSENT ]] || return 0
    gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${WHERE[@]}" --force --quiet
}

delete_node() {
    local state
    state=$(node_state) || return 1
    [[ $state != ABSENT ]] || return 0
    gcloud compute tpus tpu-vm delete "$TPU_NAME" "${WHERE[@]}" --quiet
}

node=$(retry node_state)
queued=$(retry queued_state)
if [[ $node == ABSENT && $queued == ABSENT ]]; then
    log "TPU $TPU_NAME and queued resource $QUEUED_RESOURCE are already gone"
else
    if [[ $yes != 1 ]]; then
        [[ -t 0 ]] || die "not a terminal: confirm with tpu/delete.sh --yes"
        read -r -p "Delete TPU $TPU_NAME ($node) / queued resource $QUEUED_RESOURCE ($queued) in $ZONE? Unfetched results are lost. [y/N] " answer
        [[ $answer == [yY]* ]] || die "not deleted"
    fi
    if [[ $queued != ABSENT ]]; then
        log "deleting queued resource $QUEUED_RESOURCE and its TPU"
        retry delete_queued
    fi
    if [[ $(retry node_state) != ABSENT ]]; then
        log "deleting TPU $TPU_NAME"
        retry delete_node
    fi
    log "deleted"
fi

log "TPUs and queued resources still in $ZONE (each one bills until deleted):"
gcloud compute tpus tpu-vm list "${WHERE[@]}"
gcloud compute tpus queued-resources list "${WHERE[@]}"
