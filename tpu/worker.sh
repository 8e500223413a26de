#!/usr/bin/env bash
# Runs ON a TPU worker, from the synced repository; tpu/setup.sh, tpu/run.sh and tpu/ssh.sh
# call it over ssh. Untested on real TPUs (see tpu/README.md).
#
#   worker.sh setup                       Python >= 3.11 venv (~/jaxdsm-venv) + pip install '.[tpu]'
#   worker.sh run SYNC_ID STAMP DETACH CMD [ARGS...]
#                                         CMD in the venv with this checkout first on PYTHONPATH,
#                                         output to results/tpu-logs/STAMP.log; DETACH=1: in the
#                                         background, surviving the end of the ssh session
#   worker.sh tpu-users                   processes holding the TPU, and the libtpu lock file
#   worker.sh tpu-release                 stop those processes (TERM, then KILL after 10 s)
#                                         and remove a stale /tmp/libtpu_lockfile
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
here=$(hostname)
VENV=${JAXDSM_VENV:-jaxdsm-venv}
case $VENV in /*) ;; *) VENV=$HOME/$VENV ;; esac
LOCKFILE=/tmp/libtpu_lockfile

remove_venv() {  # only ever deletes a virtual environment
    if [[ -e $VENV && ! -f $VENV/pyvenv.cfg ]]; then
        echo "$here: $VENV exists and is not a virtual environment: not replacing it" >&2
        exit 3
    fi
    rm -rf "$VENV"
}

python_ok() {  # python_ok PYTHON: is it Python >= 3.11?
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

tpu_devices() {  # the TPU device files: /dev/accel* (v4 and older), /dev/vfio/N (v5e, v6e, ...)
    local f
    for f in /dev/accel* /dev/vfio/[0-9]*; do
        if [[ -e $f ]]; then echo "$f"; fi
    done
}

tpu_pids() {  # PIDs of the processes that hold a TPU device file open
    local devices
    devices=$(tpu_devices)
    [[ -n $devices ]] || return 0
    # shellcheck disable=SC2086  # one word per device file
    sudo lsof -t -w $devices 2>/dev/null | sort -u || true
}

command=${1:-}
if [[ $# -gt 0 ]]; then shift; fi
case $command in
    setup)
        if ! python_ok "$VENV/bin/python"; then
            remove_venv
            if python_ok python3 && python3 -m venv "$VENV"; then
                echo "$here: venv $VENV from $(python3 --version)"
            else
                # The TPU images ship Python 3.10: get a newer one with uv.
                remove_venv
                export PATH=$HOME/.local/bin:$PATH
                if ! command -v uv >/dev/null; then
                    python3 -m pip install --user --quiet uv \
                        || curl -LsSf https://astral.sh/uv/install.sh | sh
                fi
                uv venv --seed --python 3.12 "$VENV"
                echo "$here: venv $VENV from uv's Python 3.12"
            fi
        fi
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet '.[tpu]'
        "$VENV/bin/python" -c 'import jax, jaxdsm, sys; print(f"jax {jax.__version__}, Python {sys.version.split()[0]}")' \
            | sed "s/^/$here: /"
        ;;
    run)
        [[ $# -ge 4 ]] || { echo "usage: worker.sh run SYNC_ID STAMP DETACH CMD [ARGS...]" >&2; exit 2; }
        expected=$1 stamp=$2 detach=$3
        shift 3
        have=$(cat .jaxdsm-sync-id 2>/dev/null || echo none)
        if [[ $have != "$expected" ]]; then
            echo "$here: code $have differs from worker 0's $expected: run tpu/sync.sh" >&2
            exit 3
        fi
        if [[ ! -x $VENV/bin/python ]]; then
            echo "$here: no Python environment $VENV: run tpu/setup.sh" >&2
            exit 3
        fi
        export PATH=$VENV/bin:$PATH
        # This checkout wins over the copy pip installed, so a sync alone updates the code.
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
        mkdir -p results/tpu-logs
        log=results/tpu-logs/$stamp.log
        ln -sfn "$stamp.log" results/tpu-logs/latest.log
        if [[ $detach == 1 ]]; then
            nohup setsid "$@" >"$log" 2>&1 </dev/null &
            echo "$here: started pid $! in the background, log $PWD/$log"
        else
            "$@" 2>&1 | tee "$log"
        fi
        ;;
    tpu-users)
        devices=$(tpu_devices)
        if [[ -z $devices ]]; then
            echo "$here: no TPU device files (/dev/accel*, /dev/vfio/N)"
        else
            pids=$(tpu_pids)
            if [[ -z $pids ]]; then
                echo "$here: no process holds the TPU"
            else
                echo "$here: processes holding the TPU:"
                # shellcheck disable=SC2086  # one word per pid
                ps -o pid,user,etime,args -p "$(echo $pids | tr ' ' ,)"
            fi
        fi
        if [[ -e $LOCKFILE ]]; then ls -l "$LOCKFILE"; else echo "$here: no $LOCKFILE"; fi
        ;;
    tpu-release)
        pids=$(tpu_pids)
        if [[ -n $pids ]]; then
            echo "$here: stopping ${pids//$'\n'/ }"
            # shellcheck disable=SC2086  # one word per pid
            sudo kill -TERM $pids 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                [[ -n $(tpu_pids) ]] || break
                sleep 1
            done
            pids=$(tpu_pids)
            if [[ -n $pids ]]; then
                echo "$here: killing ${pids//$'\n'/ }"
                # shellcheck disable=SC2086  # one word per pid
                sudo kill -KILL $pids 2>/dev/null || true
                sleep 1
            fi
        fi
        if [[ -n $(tpu_pids) ]]; then
            echo "$here: the TPU is still held: $(tpu_pids)" >&2
            exit 1
        fi
        if [[ -e $LOCKFILE ]]; then
            sudo rm -f "$LOCKFILE"
            echo "$here: removed stale $LOCKFILE"
        fi
        echo "$here: the TPU is free"
        ;;
    *)
        sed -n '2,12p' "${BASH_SOURCE[0]}" >&2
        exit 2
        ;;
esac
