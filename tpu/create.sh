#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 1: create the TPU VM or multi-host slice of tpu/env, and wait until it is READY.
#
#   tpu/create.sh
#
# Idempotent: an existing TPU (or queued resource) is kept, and running it again only waits
# for READY. Creation is retried with backoff (capacity errors are common). With QUEUED=1 the
# TPU is requested as a queued resource and created when Google has capacity.
# Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
at_most_operands 0 "$@"

SPOT_FLAG=()
if [[ $SPOT == 1 ]]; then SPOT_FLAG=(--spot); fi
what="$ACCELERATOR_TYPE, runtime $RUNTIME_VERSION, $([[ $SPOT == 1 ]] && echo spot || echo on-demand)"

create_node() {
    # An attempt that timed out may still have created the node: never create twice.
    local state
    state=$(node_state) || return 1
    [[ $state == ABSENT ]] || return 0
    gcloud compute tpus tpu-vm create "$TPU_NAME" "${WHERE[@]}" \
        --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
        ${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}
}

create_queued() {
    local state
    state=$(queued_state) || return 1
    [[ $state == ABSENT ]] || return 0
    gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" "${WHERE[@]}" \
        --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
        --runtime-version="$RUNTIME_VERSION" ${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}
}

deadline=$((SECONDS + WAIT_MINUTES * 60))
keep_waiting() {  # keep_waiting WHAT STATE: sleep, or stop at the deadline
    if ((SECONDS >= deadline)); then
        die "$1 is still $2 after $WAIT_MINUTES min; run tpu/create.sh again to keep waiting"
    fi
    log "$1 is $2; checking again in ${POLL_SECONDS}s"
    sleep "$POLL_SECONDS"
}

if [[ $QUEUED == 1 ]]; then
    state=$(retry queued_state)
    if [[ $state == ABSENT ]]; then
        log "requesting queued resource $QUEUED_RESOURCE for TPU $TPU_NAME ($what) in $ZONE"
        retry create_queued
    else
        log "queued resource $QUEUED_RESOURCE exists ($state): not requesting another"
    fi
    while :; do
        state=$(retry queued_state)
        case $state in
            ACTIVE) break ;;
            FAILED | SUSPENDING | SUSPENDED | ABSENT)
                die "queued resource $QUEUED_RESOURCE is $state: run tpu/delete.sh, then tpu/create.sh" ;;
        esac
        keep_waiting "queued resource $QUEUED_RESOURCE" "$state"
    done
else
    state=$(retry node_state)
    if [[ $state == ABSENT ]]; then
        log "creating TPU $TPU_NAME ($what) in $ZONE"
        retry create_node
    else
        log "TPU $TPU_NAME exists ($state): not creating another"
    fi
fi

while :; do
    state=$(retry node_state)
    case $state in
        READY) break ;;
        PREEMPTED | TERMINATED)
            die "TPU $TPU_NAME is $state (Spot and preemptible TPUs cannot be restarted): run tpu/delete.sh, then tpu/create.sh" ;;
        STOPPED)
            die "TPU $TPU_NAME is STOPPED: start it (gcloud compute tpus tpu-vm start $TPU_NAME --zone=$ZONE --project=$PROJECT) or run tpu/delete.sh, then tpu/create.sh" ;;
    esac
    keep_waiting "TPU $TPU_NAME" "$state"
done
log "TPU $TPU_NAME is READY with $(retry worker_count) worker(s); next: tpu/sync.sh"
