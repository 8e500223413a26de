#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Step 3: on every worker, a Python >= 3.11 environment (~/VENV) with jaxdsm and JAX's TPU
# build (pip install '.[tpu]'). Needs tpu/sync.sh first.
#
#   tpu/setup.sh
#
# Idempotent (an existing environment is reused), retried with backoff. Run it again when
# pyproject.toml's dependencies change; code changes only need tpu/sync.sh.
# Untested on real TPUs (see tpu/README.md).
set -euo pipefail
# shellcheck source=common.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
at_most_operands 0 "$@"

log "setting up $VENV on every worker of $TPU_NAME (a few minutes)"
retry on_workers all "cd \$HOME/$(q "$REMOTE_DIR") 2>/dev/null || { echo \"\$(hostname): no ~/$(q "$REMOTE_DIR"): run tpu/sync.sh first\" >&2; exit 3; }
JAXDSM_VENV=$(q "$VENV") bash tpu/worker.sh setup"
log "set up; next: tpu/run.sh python tpu/smoke.py"
