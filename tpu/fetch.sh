#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 5: copy ~/REMOTE_DIR/results from worker 0 (process 0 writes every result) into
# DEST/results here (default DEST: the repository root, so ./results/, which git ignores).
#
#   tpu/fetch.sh [DEST]
#
# Works during a run too: unfinished run folders come with their finished chunks, which is
# what `--resume` needs after a preemption (tpu/push-run.sh). Idempotent (files are
# overwritten), retried with backoff. Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
at_most_operands 1 "$@"

dest=${1:-$REPO_ROOT}
mkdir -p -- "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
archive=.jaxdsm-results.tar.gz

# GNU tar exits 1 when a file changed while it was read (a running job's log and chunks
# do): that archive is still usable; 2 and above are errors.
pack() {
    on_workers 0 "set -eu
cd \$HOME/$(q "$REMOTE_DIR")
[ -d results ] || { echo \"\$(hostname): no results yet in ~/$(q "$REMOTE_DIR")\" >&2; exit 3; }
tar -czf \$HOME/$archive results || [ \$? -eq 1 ]"
}

retry pack
retry copy_from_worker 0 "$archive" "$tmp/results.tar.gz"
tar -xzf "$tmp/results.tar.gz" -C "$dest"
retry on_workers 0 "rm -f \$HOME/$archive"
log "fetched worker 0's results into $dest/results"
