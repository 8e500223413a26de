"""The `jaxdsm` command: help, a small run, reproduce, and one-line errors on bad input
that leave no results behind."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

import experiments
from experiments import paper
from jaxdsm import cli, results

TINY = ["--n", "6", "--trials", "4", "--temperatures", "2", "--tol-max-iterations", "50",
        "--no-progress"]


def jaxdsm(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxdsm.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_run_help_lists_experiments_with_one_line_each():
    proc = jaxdsm("run", "--help")
    assert proc.returncode == 0
    for name, experiment in experiments.EXPERIMENTS.items():
        assert name in proc.stdout
        assert experiment.summary.split()[0] in proc.stdout


def test_run_writes_the_run_folder(tmp_path):
    proc = jaxdsm("run", "spectral-gap", *TINY, "--out", str(tmp_path), "--run-id", "x")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "spectral-gap" / "x"
    assert f"wrote {run_dir}" in proc.stdout and "| Exp 1 |" in proc.stdout
    rows = results.read_csv(run_dir / "summary.csv")
    assert [int(r["n"]) for r in rows] == [6, 6] and rows[0]["trials"] == "4"
    assert results.read_json(run_dir / "config.json")["config"]["trials"] == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "spectral-gap", "--n", "1"], "n must be an integer >= 2"),
        (["run", "spectral-gap", "--t-min", "0"], "t_min must be finite and > 0"),
        (["run", "spectral-gap", "--t-min", "-1"], "t_min must be finite and > 0"),
        (["run", "spectral-gap", "--t-max", "nan"], "t_max must be finite and > 0"),
        (["run", "spectral-gap", "--t-min", "2", "--t-max", "1"], "t_max (1.0) must be >= t_min"),
        (["run", "spectral-gap", "--trials", "2.5"], "argument --trials: invalid int value: '2.5'"),
        (["run", "spectral-gap", "--trials", "0"], "trials must be a positive integer"),
        (["run", "spectral-gap", "--iterations", "-3"], "iterations must be a positive integer"),
        (["run", "spectral-gap", "--mode", "fast"], "mode must be one of auto, scaling, stabilized, log, direct"),
        (["run", "no-such-experiment"], "invalid choice: 'no-such-experiment'"),
        (["run", "spectral-gap", "--n"], "n must list at least one size"),
        (["run", "matching", "--gumbel-taus", "0.1", "x"], "invalid float value: 'x'"),
    ],
)
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = jaxdsm(*args, "--out", str(out))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.startswith("jaxdsm: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_setting_is_a_flag_that_takes_its_default_back(name):
    """Each config field, given on the command line as its default's values, gives the
    default config back (a bare ``tuple`` field once split its value into characters)."""
    experiment = experiments.EXPERIMENTS[name]
    default = experiment.config_cls()
    argv = ["run", name]
    for f in dataclasses.fields(default):
        value, flag = getattr(default, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    config, explicit = cli._config(experiment, cli.build_parser().parse_args(argv))
    assert config == default
    assert set(explicit) == {f.name for f in dataclasses.fields(default)}


def test_list_settings_take_several_values_or_none():
    experiment = experiments.EXPERIMENTS["matching"]
    args = cli.build_parser().parse_args(
        ["run", "matching", "--gumbel-taus", "0.1", "0.5", "--ablation-iterations"])
    config, _ = cli._config(experiment, args)
    assert config.gumbel_taus == (0.1, 0.5) and config.ablation_iterations == ()


def test_a_config_field_the_command_cannot_parse_is_refused_when_building_it():
    @dataclasses.dataclass
    class Config:
        values: tuple = (1, 2)

    with pytest.raises(TypeError, match="values"):
        cli._add_config_options(cli._Parser(), Config)


def test_unwritable_out_is_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = jaxdsm("run", "spectral-gap", *TINY, "--out", str(blocker / "results"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("jaxdsm: error: --out: cannot write results under")
    assert "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a folder"


def test_reproduce_checks_out_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = jaxdsm("reproduce", "--out", str(blocker / "results"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("jaxdsm: error: --out: cannot write results under")
    assert proc.stderr.count("\n") == 1


def test_resume_errors(tmp_path):
    proc = jaxdsm("run", "spectral-gap", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "--resume:" in proc.stderr and "no config.json" in proc.stderr
    proc = jaxdsm("run", "spectral-gap", "--resume", str(tmp_path), "--trials", "5")
    assert proc.returncode == 2 and "drop --trials" in proc.stderr


def test_reproduce_runs_every_experiment_and_writes_an_index(tmp_path, monkeypatch, capsys):
    tiny = {
        "spectral-gap": {"n": (6,), "trials": 4, "temperatures": 2, "tol_max_iterations": 50},
        "orthogonal-collapse": {"n": 8, "trials": 8, "temperatures": 2},
        "affine-ablation": {"n": 8, "layers": 2, "temperatures": 2, "steps": 20, "batch": 32,
                            "eval_pairs": 50, "control_block": 2},
        "depth": {"n": 8, "trials": 16, "temperatures": 2, "depth": 8},
        "residual-stagnation": {"n": 8, "trials": 16, "temperatures": 2, "depth": 8,
                                "activations": ("relu",)},
        "bounds": {"n": 8, "samples": 2000, "grid_points": 10, "lemma2_trials": 4,
                   "lemma2_vectors": 2, "temperatures": 2, "lemma3_samples": 200,
                   "wedin_samples": 8},
        "matching": {"seeds": 2, "steps": 40, "check_every": 10, "warmup_steps": 20, "hidden": 8,
                     "features": 4, "depth": 1, "batch": 8, "monitor": 8, "proxy": 8,
                     "eval_instances": 16, "ablation_iterations": (), "spike_window": 10,
                     "domain_ablation": False},
    }
    # A new experiment needs a tiny config here (or reproduce=False, like scaling).
    assert set(tiny) == {n for n, e in experiments.EXPERIMENTS.items() if e.reproduce}
    registry = {name: dataclasses.replace(e, quick=tiny.get(name, e.quick))
                for name, e in experiments.EXPERIMENTS.items()}
    monkeypatch.setattr(experiments, "EXPERIMENTS", registry)
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    index = (tmp_path / "index.md").read_text()
    assert not (tmp_path / "scaling").exists()  # a measurement of this machine, not a claim
    for name in (n for n, e in registry.items() if e.reproduce):
        run_dirs = list((tmp_path / name).iterdir())
        assert len(run_dirs) == 1 and (run_dirs[0] / "manifest.json").exists()
        assert f"[{name}]({name}/{run_dirs[0].name}/report.md)" in index
    assert "| Exp 1 |" in index and "| Appendix C |" in index
    # The index lists every paper claim with a verdict, and no experiment cites an unknown one.
    assert "Claims citing no known paper statement" not in index
    for claim in paper.PAPER_CLAIMS:
        row = next(line for line in index.splitlines() if line.startswith(f"| {claim.source} |"))
        assert "not tested" not in row, row
