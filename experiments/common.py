"""What every experiment shares: the Experiment record, claims and verdicts, and the
run flow config -> run folder -> sweep -> arrays/summary/figures -> report -> manifest."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from jaxdsm import _checks, distributed, results, sweep

HOLDS, FAILS, PARTLY, UNRESOLVED = "holds", "fails", "partly holds", "not resolvable"
# A measurement reported beside the claims (not something the paper claims): never tallied.
CONTEXT = "context"


@dataclass(frozen=True)
class Claim:
    """One row of report.md: a paper claim beside what we measured and a verdict."""

    source: str  # where the paper states it, e.g. "Exp 1", "Appendix C"
    claim: str
    measured: str
    verdict: str  # HOLDS, FAILS, PARTLY, UNRESOLVED or CONTEXT
    note: str = ""


@dataclass(frozen=True)
class RunOutput:
    """What an experiment's ``run`` returns besides the files it wrote."""

    claims: list[Claim]
    timings: dict[str, float]
    findings: str = ""  # free markdown placed under the claims table


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str  # one line, shown by `jaxdsm run --help`
    config_cls: type
    quick: dict  # field overrides for --quick
    run: Callable[[object, Path, bool], RunOutput]  # (config, run_dir, progress)
    reproduce: bool = True  # run by `jaxdsm reproduce` (False: tools such as benchmarks)


class LogTemperatureGrid:
    """Config mixin for fields ``t_min``, ``t_max`` and ``temperatures``: the log-spaced grid
    and its checks, shared by every experiment that sweeps temperatures."""

    def check_temperature_range(self) -> None:
        t_min = _checks.check_positive_float(self.t_min, "t_min")
        t_max = _checks.check_positive_float(self.t_max, "t_max")
        if t_max < t_min:
            raise ValueError(f"t_max ({t_max}) must be >= t_min ({t_min})")

    def temperature_grid(self) -> np.ndarray:
        return np.geomspace(self.t_min, self.t_max, self.temperatures)


def field_help(text: str, **kwargs):
    """A dataclass field whose help text becomes the CLI option's help."""
    return dataclasses.field(metadata={"help": text}, **kwargs)


def config_from_dict(config_cls, data: dict):
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"config: unknown fields {sorted(unknown)} for {config_cls.__name__}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return config_cls(**kwargs)


def execute(
    experiment: Experiment,
    config=None,
    *,
    out: Path | str = "results",
    run_id: str | None = None,
    resume: Path | str | None = None,
    progress: bool = True,
) -> Path:
    """Runs one experiment into a run folder and returns the folder.

    With ``resume``, continues the run in that folder from its finished chunks (its
    config.json wins; a finished run is refused).
    """
    writer = distributed.is_writer()
    if resume is not None:
        # Every process reads the folder: on several hosts keep it on shared storage.
        run_dir = Path(resume)
        if not (run_dir / "config.json").exists():
            raise ValueError(f"--resume: {run_dir} has no config.json; not a jaxdsm run folder")
        if (run_dir / "manifest.json").exists():
            raise ValueError(f"--resume: {run_dir} is already complete (it has manifest.json)")
        saved = results.read_json(run_dir / "config.json")
        if saved.get("experiment") != experiment.name:
            raise ValueError(f"--resume: {run_dir} is a {saved.get('experiment')!r} run")
        config = config_from_dict(experiment.config_cls, saved["config"])
    else:
        config = config if config is not None else experiment.config_cls()
        run_id = run_id or _shared_run_id()
        run_dir = results.prepare_run_dir(out, experiment.name, run_id) if writer else None
    if not writer:
        # Other processes compute alongside process 0 but keep their files private.
        run_dir = Path(tempfile.mkdtemp(prefix="jaxdsm-process-"))
    if resume is None:
        results.write_json(
            run_dir / "config.json",
            {"experiment": experiment.name, "config": dataclasses.asdict(config)},
        )

    x64_before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", bool(getattr(config, "float64", False)))
    try:
        started = time.perf_counter()
        try:
            output = experiment.run(config, run_dir, progress)
        except BaseException:
            print(f"jaxdsm: {run_dir} is incomplete; finished chunks are kept. Continue with:\n"
                  f"  jaxdsm run {experiment.name} --resume {run_dir}", file=sys.stderr)
            raise
        wall = time.perf_counter() - started
        write_report(run_dir, experiment, config, output)
        manifest = results.environment_manifest()
        manifest.update(
            experiment=experiment.name,
            seeds=_seeds(config),
            wall_seconds=round(wall, 3),
            timings={k: round(v, 3) if isinstance(v, float) else v
                     for k, v in output.timings.items()},
            resumed=resume is not None,
        )
        results.write_json(run_dir / "manifest.json", manifest)  # written last: marks completion
    finally:
        jax.config.update("jax_enable_x64", x64_before)
        if not writer:
            shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(run_dir / "chunks", ignore_errors=True)
    return run_dir


def _shared_run_id() -> str:
    """A timestamp run id, process 0's on every process."""
    now = np.array([int(x) for x in results.new_run_id().split("-")], np.int32)
    date, clock = distributed.from_writer(now)
    return f"{int(date)}-{int(clock):06d}"


def _seeds(config) -> list[int]:
    trials = getattr(config, "trials", None)
    per_seed = getattr(config, "trials_per_seed", None)
    seed = getattr(config, "seed", 0)
    if trials is None or per_seed is None:
        return [seed]
    return list(range(seed, seed + -(-trials // per_seed)))


def write_report(run_dir: Path, experiment: Experiment, config, output: RunOutput) -> None:
    lines = [
        f"# {experiment.name}",
        "",
        experiment.summary,
        "",
        "## Claims",
        "",
        claims_table(output.claims),
        "",
    ]
    if output.findings:
        lines += [output.findings.rstrip(), ""]
    lines += ["## Configuration", "", "```json"]
    lines += [results.json_dumps(dataclasses.asdict(config)), "```", ""]
    figures = sorted(p.name for p in run_dir.glob("*.png"))
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    results.write_text(run_dir / "report.md", "\n".join(lines))
    results.write_json(run_dir / "claims.json", [dataclasses.asdict(c) for c in output.claims])


def read_claims(run_dir: Path) -> list[Claim]:
    return [Claim(**c) for c in results.read_json(Path(run_dir) / "claims.json")]


def claims_table(claims: Sequence[Claim]) -> str:
    rows = ["| source | claim | measured | verdict |", "|---|---|---|---|"]
    for c in claims:
        verdict = f"**{c.verdict}**" + (f" ({c.note})" if c.note else "")
        cells = (c.source, c.claim, c.measured, verdict)
        rows.append("| " + " | ".join(table_cell(x) for x in cells) + " |")
    return "\n".join(rows)


def table_cell(text: str) -> str:
    """A markdown table cell: a literal | (as in ||x|| or |lambda_2|) would split the cell."""
    return text.replace("|", "\\|")


def sweep_one_size(measure, config, run_dir: Path, progress: bool, description: str) -> tuple:
    """``sweep.run_grid`` at the single size ``config.n`` over ``config.temperature_grid()``;
    writes arrays.npz (size axis dropped, ``temperature`` added) and returns (arrays, timings)."""
    temperatures = config.temperature_grid()
    swept = sweep.run_grid(
        measure, sizes=(config.n,), temperatures=temperatures, trials=config.trials,
        chunk_size=config.chunk_size, microbatch=config.microbatch or None, seed=config.seed,
        trials_per_seed=config.trials_per_seed, chunk_dir=run_dir / "chunks", progress=progress,
        description=description,
    )
    arrays = {k: v[0] for k, v in swept.arrays.items()}
    arrays["temperature"] = temperatures
    results.write_npz(run_dir / "arrays.npz", arrays)
    return arrays, swept.report()


def first_true_layer(mask: np.ndarray) -> np.ndarray:
    """1-based index of the first True along the last axis (a layer); inf where none."""
    return np.where(mask.any(-1), mask.argmax(-1) + 1.0, np.inf)


def finite_min(values) -> float:
    """Smallest finite value (nan marks 'nothing to check'); nan if there is none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.min()) if values.size else float("nan")


def finite_max(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else float("nan")
