#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Copy a run folder from here to every worker, at the same path, to resume it there:
#
#   tpu/push-run.sh results/spectral-gap/RUN_ID          # a path relative to the repository
#   tpu/run.sh jaxdsm run spectral-gap --resume results/spectral-gap/RUN_ID
#
# `--resume` reads the folder's config.json on every process and its finished chunks on
# process 0, so after a preemption (the TPU and its disks are gone) or on a new TPU: fetch
# the folder while the run is going (tpu/fetch.sh), create, sync and set up the new TPU, then
# push the folder back with this script. Idempotent, retried with backoff.
# Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 ]] || { usage >&2; exit 2; }
run=${1%/}
[[ $run != /* && $run != *..* ]] || die "give the run folder relative to the repository root, e.g. results/spectral-gap/RUN_ID"
[[ -f $REPO_ROOT/$run/config.json ]] || die "$REPO_ROOT/$run has no config.json: not a jaxdsm run folder"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
archive=.jaxdsm-run.tar.gz
COPYFILE_DISABLE=1 tar -C "$REPO_ROOT" -czf "$tmp/run.tar.gz" "$run"

push() {
    copy_to_workers all "$tmp/run.tar.gz" "$archive" || return 1
    on_workers all "set -eu
mkdir -p \$HOME/$(q "$REMOTE_DIR")
tar -xzf \$HOME/$archive -C \$HOME/$(q "$REMOTE_DIR")
rm -f \$HOME/$archive
echo \"\$(hostname): $(q "$run")\""
}

log "copying $run to every worker of $TPU_NAME"
retry push
log "pushed; resume with: tpu/run.sh jaxdsm run EXPERIMENT --resume $run"
