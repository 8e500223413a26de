#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 4: run a command on every worker at once, in the synced repository with the
# environment of tpu/setup.sh.
#
#   tpu/run.sh [--detach] COMMAND [ARGS...]
#
#   tpu/run.sh python tpu/smoke.py                       # topology + sharded vs one device
#   tpu/run.sh jaxdsm reproduce --out results            # the papers, into ~/REMOTE_DIR/results
#   tpu/run.sh --detach jaxdsm run spectral-gap --run-id big --trials 100000
#   tpu/run.sh jaxdsm run spectral-gap --resume results/spectral-gap/big
#
# On a TPU with more than one worker it sets JAXDSM_DISTRIBUTED=1 (DISTRIBUTED in tpu/env), so
# jaxdsm and smoke.py call jax.distributed.initialize(), which finds the other workers itself
# on Cloud TPU; process 0 (worker 0) writes the results. Output also goes to
# ~/REMOTE_DIR/results/tpu-logs/<stamp>.log on each worker (latest.log links the newest).
# --detach starts the command in the background and returns: for long runs, which then
# survive a dropped ssh connection. Not retried: a run is not idempotent.
# Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

detach=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --detach) detach=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { usage >&2; exit 2; }

# Every worker must run the code worker 0 has (checked on each worker before it starts).
id=$(retry on_workers 0 "echo SYNC_ID=\$(cat \$HOME/$(q "$REMOTE_DIR")/.jaxdsm-sync-id 2>/dev/null || echo none)" \
    | tr -d '\r' | sed -n 's/^SYNC_ID=//p' | tail -n 1)
[[ -n $id && $id != none ]] || die "no synced code on worker 0: run tpu/sync.sh and tpu/setup.sh"

if [[ $DISTRIBUTED == auto ]]; then
    workers=$(retry worker_count)
    [[ $workers -ge 1 ]] || die "could not count the workers of $TPU_NAME: set DISTRIBUTED=0 or 1 in $ENV_FILE"
    multihost=$((workers > 1 ? 1 : 0))
else
    multihost=$DISTRIBUTED
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
remote="cd \$HOME/$(q "$REMOTE_DIR") && JAXDSM_DISTRIBUTED=$multihost JAXDSM_VENV=$(q "$VENV") bash tpu/worker.sh run $(q "$id") $stamp $detach"
for arg in "$@"; do remote+=" $(q "$arg")"; done

log "running on every worker of $TPU_NAME (code $id, JAXDSM_DISTRIBUTED=$multihost): $*"
on_workers all "$remote"
if [[ $detach == 1 ]]; then
    log "started; follow it with: tpu/ssh.sh 0 tail -f $REMOTE_DIR/results/tpu-logs/$stamp.log"
else
    log "done; next: tpu/fetch.sh"
fi
