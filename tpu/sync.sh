#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 2: copy this working tree (uncommitted edits included) to every worker.
#
#   tpu/sync.sh
#
# Every worker gets the same archive into ~/REMOTE_DIR: old code there is removed first, the
# results/ folder is kept. Each sync gets an id, written to REMOTE_DIR/.jaxdsm-sync-id;
# tpu/run.sh refuses to start when a worker's id differs from worker 0's (mismatched code).
# Idempotent, retried with backoff. Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
at_most_operands 0 "$@"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The files git would commit (tracked, plus untracked ones that are not ignored: results/,
# tpu/env and caches stay here); without git, everything but the usual clutter.
# COPYFILE_DISABLE: no macOS ._* metadata files in the archive.
export COPYFILE_DISABLE=1
if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard) |
        while IFS= read -r -d '' f; do
            if [[ -f $REPO_ROOT/$f ]]; then printf '%s\0' "$f"; fi  # not deleted-but-tracked
        done | tar -C "$REPO_ROOT" --null -T - -czf "$tmp/code.tar.gz"
else
    tar -C "$REPO_ROOT" -czf "$tmp/code.tar.gz" \
        --exclude=.git --exclude=results --exclude=.venv --exclude=__pycache__ \
        --exclude='*.egg-info' --exclude=build --exclude=dist --exclude='.*_cache' \
        --exclude=.benchmarks --exclude=benchmarks/out --exclude=tpu/env .
fi

if command -v sha256sum >/dev/null; then
    sum=$(sha256sum "$tmp/code.tar.gz")
else
    sum=$(shasum -a 256 "$tmp/code.tar.gz")
fi
version=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo nogit)
id="$(date -u +%Y%m%dT%H%M%SZ)-$version-${sum:0:12}"
archive=".jaxdsm-code-$id.tar.gz"

push() {
    copy_to_workers all "$tmp/code.tar.gz" "$archive" || return 1
    on_workers all "set -eu
dir=\$HOME/$(q "$REMOTE_DIR")
if [ \"\$(cat \"\$dir/.jaxdsm-sync-id\" 2>/dev/null)\" != $(q "$id") ]; then
    mkdir -p \"\$dir\"
    find \"\$dir\" -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +
    tar -xzf \"\$HOME/\"$(q "$archive") -C \"\$dir\"
    echo $(q "$id") > \"\$dir/.jaxdsm-sync-id\"
fi
rm -f \"\$HOME/\"$(q "$archive")
echo \"\$(hostname): code $(q "$id")\""
}

log "copying $REPO_ROOT ($(du -h "$tmp/code.tar.gz" | cut -f1) archive, id $id) to every worker of $TPU_NAME"
retry push
log "synced; next: tpu/setup.sh (once per TPU, and after dependency changes), then tpu/run.sh"
