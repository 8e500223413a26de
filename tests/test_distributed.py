"""Sweeps on several devices and several processes give the same bits as on one device.

They need a fresh JAX (the CPU device count is fixed at start-up), so they run in
subprocesses: fake CPU devices in one process (XLA_FLAGS, and ``split_cpu``), and two
local processes joined by jax.distributed over 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import EXPERIMENTS, execute
from experiments import orthogonal_collapse as oc
from jaxdsm import distributed, results

HERE = Path(__file__).parent
ROOT = HERE.parent


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return dict(env, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), **extra)


def test_sharded_sweeps_equal_one_device_when_trials_do_not_divide(tmp_path):
    out = tmp_path / "arrays.npz"
    proc = subprocess.run([sys.executable, str(HERE / "sharded_sweep.py"), str(out), "4"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    arrays = dict(np.load(out))
    for name in ("collapse/cos", "collapse/gamma", "tolerance/sigma2", "tolerance/n_iters"):
        one = arrays[f"{name}/1"]
        assert one.shape == (1, 2, 37)
        for d in (2, 3, 4):  # 37 trials: never a multiple of the device count
            np.testing.assert_array_equal(arrays[f"{name}/{d}"], one, err_msg=f"{name} on {d}")
    # The tolerance loop really ran to different depths per trial.
    assert len(np.unique(arrays["tolerance/n_iters/1"])) > 1


def test_cpu_split_into_devices_runs_spectra_on_both_and_matches_one(tmp_path):
    out = tmp_path / "arrays.npz"
    # Before jaxdsm ran LAPACK one matrix at a time, this hung.
    (proc,), (log,) = _run_all([[sys.executable, str(HERE / "cpu_cores_sweep.py"), str(out)]],
                               [_env()])
    assert proc.returncode == 0, log[-3000:]
    arrays = dict(np.load(out))
    for name in ("top_two", "svd", "lambda2", "henrici", "stacked_top_two"):
        one, two = arrays[f"{name}/1"], arrays[f"{name}/2"]
        assert one.shape[:3] == (1, 2, 70) and np.all(np.isfinite(one))
        np.testing.assert_array_equal(two, one, err_msg=name)


def _run_all(commands, envs, timeout=300):
    """Starts every command at once; (processes, combined outputs). A process still running
    after ``timeout`` (a hang, a stuck collective) is killed with its whole process group."""
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
             for cmd, env in zip(commands, envs)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return procs, logs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_two_devices_each_equal_one_process(tmp_path):
    config = {"n": 8, "trials": 37, "temperatures": 2, "chunk_size": 16}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in config.items()]
    port = _free_port()
    envs = [_env(JAXDSM_DISTRIBUTED="1", JAXDSM_COORDINATOR=f"127.0.0.1:{port}",
                 JAXDSM_NUM_PROCESSES="2", JAXDSM_PROCESS_ID=str(pid),
                 JAXDSM_CPU_DEVICES="2") for pid in range(2)]
    cmd = [sys.executable, "-m", "jaxdsm.cli", "run", "orthogonal-collapse", *flags,
           "--out", str(tmp_path / "multi"), "--run-id", "mp", "--no-progress"]
    procs, logs = _run_all([cmd, cmd], envs)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "wrote" in logs[0] and "wrote" not in logs[1]  # only process 0 reports and writes
    run_dir = tmp_path / "multi" / "orthogonal-collapse" / "mp"
    assert list((tmp_path / "multi" / "orthogonal-collapse").iterdir()) == [run_dir]
    manifest = results.read_json(run_dir / "manifest.json")
    assert manifest["process_count"] == 2 and len(manifest["devices"]) == 4
    assert manifest["timings"]["devices"] == 4

    single = execute(EXPERIMENTS["orthogonal-collapse"], oc.Config(**config),
                     out=tmp_path / "single", run_id="one", progress=False)
    multi_arrays = results.read_npz(run_dir / "arrays.npz")
    for k, v in results.read_npz(single / "arrays.npz").items():
        np.testing.assert_array_equal(multi_arrays[k], v, err_msg=k)


def test_split_cpu_checks_its_input_and_changes_nothing_once_jax_runs(monkeypatch):
    jax.numpy.zeros(1).block_until_ready()  # JAX has started
    devices = jax.device_count()
    assert distributed.split_cpu(2) == 0 and jax.device_count() == devices
    monkeypatch.setenv("JAXDSM_CPU_DEVICES", "two")
    with pytest.raises(ValueError, match="JAXDSM_CPU_DEVICES must be an integer"):
        distributed.split_cpu()
    with pytest.raises(ValueError, match=">= 1"):
        distributed.split_cpu(0)
