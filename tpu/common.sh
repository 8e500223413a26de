# shellcheck shell=bash source-path=SCRIPTDIR
# Shared by the tpu/*.sh scripts (sourced, never run): the settings of tpu/env, logging, a
# retry helper and the gcloud command lines. Runs with bash 3.2 (macOS) and later.

TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_ROOT=$(cd "$TPU_DIR/.." && pwd)
ENV_FILE=${JAXDSM_TPU_ENV:-$TPU_DIR/env}

# The comment block at the top of the running script.
usage() { sed -n '2,/^set -/p' "$0" | sed -e '/^# shellcheck/d' -e '/^set -/d' -e 's/^# \{0,1\}//'; }
log() { printf '[tpu %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# -h / --help prints the running script's comment block and exits, before anything else
# (sourced without arguments, this file sees the script's own).
case ${1:-} in -h | --help) usage; exit 0 ;; esac

# For scripts that take at most $1 operands and no options: anything else is an error,
# not an argument to ignore (`create.sh --oops` must not create a TPU).
at_most_operands() {
    local most=$1
    shift
    local arg
    for arg in "$@"; do [[ $arg != -* ]] || die "unknown option $arg (see $0 --help)"; done
    (($# <= most)) || die "too many arguments: $* (see $0 --help)"
}

[[ -f $ENV_FILE ]] || die "no settings file $ENV_FILE: cp tpu/env.example tpu/env, then edit it"
# shellcheck source=/dev/null
source "$ENV_FILE"

for _name in PROJECT ZONE TPU_NAME ACCELERATOR_TYPE RUNTIME_VERSION; do
    [[ -n ${!_name:-} ]] || die "set $_name in $ENV_FILE"
done
SPOT=${SPOT:-0}
QUEUED=${QUEUED:-0}
QUEUED_RESOURCE=${QUEUED_RESOURCE:-$TPU_NAME-qr}
SSH_VIA=${SSH_VIA:-}
REMOTE_DIR=${REMOTE_DIR:-jaxdsm}
VENV=${VENV:-jaxdsm-venv}
DISTRIBUTED=${DISTRIBUTED:-auto}
RETRIES=${RETRIES:-5}
RETRY_DELAY=${RETRY_DELAY:-15}
POLL_SECONDS=${POLL_SECONDS:-30}
WAIT_MINUTES=${WAIT_MINUTES:-60}

# A plain relative path below $HOME (sync.sh replaces what is in REMOTE_DIR): no ".", "..", spaces.
plain_path() {
    [[ $1 =~ ^[A-Za-z0-9_][A-Za-z0-9._/-]*$ && $1 != *..* && $1 != */. && $1 != */./* ]]
}
plain_path "$REMOTE_DIR" || die "REMOTE_DIR must be a plain folder name below the home directory, not '$REMOTE_DIR'"
plain_path "$VENV" || die "VENV must be a plain folder name below the home directory, not '$VENV'"
case $DISTRIBUTED in auto | 0 | 1) ;; *) die "DISTRIBUTED must be auto, 0 or 1" ;; esac

# --project and --zone on every gcloud call: the settings file wins over gcloud's defaults.
WHERE=(--project="$PROJECT" --zone="$ZONE")

# ssh/scp: the GA commands, or the alpha ones for IAP tunnelling.
SSH_GCLOUD=(gcloud compute tpus tpu-vm)
SSH_FLAGS=()
case $SSH_VIA in
    "" | external) ;;
    internal) SSH_FLAGS=(--internal-ip) ;;
    iap)
        SSH_GCLOUD=(gcloud alpha compute tpus tpu-vm)
        SSH_FLAGS=(--tunnel-through-iap)
        ;;
    *) die "SSH_VIA must be empty, internal or iap, not '$SSH_VIA'" ;;
esac

# retry CMD [ARGS...]: run CMD up to RETRIES times, waiting RETRY_DELAY s, then twice as long
# each time (at most 300 s). Only for idempotent steps. CMD runs as an `until` condition, where
# `set -e` does not apply: functions given to retry must return their own failures.
retry() {
    local attempt=1 delay=$RETRY_DELAY
    until "$@"; do
        if ((attempt >= RETRIES)); then
            log "failed $attempt times: $*"
            return 1
        fi
        log "attempt $attempt of $RETRIES failed; again in ${delay}s: $*"
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$((delay * 2))
        if ((delay > 300)); then delay=300; fi
    done
}

# resource_value KIND NAME FORMAT: the --format value of a TPU resource, ABSENT when it does
# not exist, and a failure for any other error (an auth or network error is never taken for
# "already deleted").
resource_value() {
    local kind=$1 name=$2 format=$3 out errfile rc=0
    errfile=$(mktemp)
    out=$(gcloud compute tpus "$kind" describe "$name" "${WHERE[@]}" --format="$format" 2>"$errfile") || rc=$?
    if ((rc == 0)); then
        printf '%s\n' "${out:-UNKNOWN}"
    elif grep -qE 'NOT_FOUND|was not found' "$errfile"; then
        echo ABSENT
    else
        cat "$errfile" >&2
        rm -f "$errfile"
        log "gcloud compute tpus $kind describe $name failed"
        return 1
    fi
    rm -f "$errfile"
}

# The node's state (CREATING, READY, PREEMPTED, ...) or ABSENT.
node_state() { resource_value tpu-vm "$TPU_NAME" 'value(state)'; }
# The queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, FAILED, ...) or ABSENT.
queued_state() { resource_value queued-resources "$QUEUED_RESOURCE" 'value(state.state)'; }

# The number of workers (hosts) of the node: one network endpoint each.
worker_count() {
    local endpoints
    endpoints=$(resource_value tpu-vm "$TPU_NAME" 'value(networkEndpoints[].ipAddress)') || return 1
    [[ $endpoints != ABSENT ]] || die "TPU $TPU_NAME does not exist: run tpu/create.sh"
    printf '%s\n' "$endpoints" | grep -oE '[0-9]+(\.[0-9]+){3}' | wc -l | tr -d ' '
}

# on_workers WORKER COMMAND: run the bash command line COMMAND on worker WORKER (0, 1, ...
# or all: every worker at once).
on_workers() {
    "${SSH_GCLOUD[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker="$1" \
        ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"} --command="$2"
}

# copy_to_workers WORKER LOCAL_FILE REMOTE_PATH (REMOTE_PATH relative to $HOME there).
copy_to_workers() {
    "${SSH_GCLOUD[@]}" scp "$2" "$TPU_NAME:$3" "${WHERE[@]}" --worker="$1" \
        ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
}

# copy_from_worker WORKER REMOTE_PATH LOCAL_FILE.
copy_from_worker() {
    "${SSH_GCLOUD[@]}" scp "$TPU_NAME:$2" "$3" "${WHERE[@]}" --worker="$1" \
        ${SSH_FLAGS[@]+"${SSH_FLAGS[@]}"}
}

# q WORD: WORD quoted for the remote bash command line.
q() { printf '%q' "$1"; }
