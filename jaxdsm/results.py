"""Run folders: config, manifest, arrays, summary table, report; atomic writes; resume.

Layout of one run (``results/<experiment>/<run-id>/``)::

    config.json     the experiment's configuration (a resumed run must match it)
    manifest.json   versions, backend, devices, x64, seeds, compile and run seconds
    arrays.npz      per-trial raw arrays
    summary.csv     one row per grid point
    report.md       each paper claim beside the measured value and a verdict
    *.png           figures, drawn from the saved arrays only
    chunks/         finished sweep chunks (kept until the run completes; used by resume)

Every file is written to a temporary name in the same folder and renamed into place, so a
reader (or a resumed run) never sees a half-written file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def json_dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default)


def write_json(path: Path, obj) -> None:
    write_text(path, json_dumps(obj) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    _atomic_write_bytes(path, buffer.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    if not rows:
        raise ValueError("no rows to write")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _csv_cell(value):
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def prepare_run_dir(out: Path | str, experiment: str, run_id: str | None = None) -> Path:
    """Creates ``out/experiment/run_id`` (a fresh id when none is given).

    A folder that already has files (a finished run, or an interrupted one whose chunk
    files a new run must not pick up) is left alone: the new run gets ``run_id-1``,
    ``run_id-2``, ... Raises a one-line ValueError naming ``--out`` when the folder cannot
    be created or written, before any work is done.
    """
    out = Path(out)
    run_id = run_id or new_run_id()
    run_dir = out / experiment / run_id
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            suffix = 1
            while (out / experiment / f"{run_id}-{suffix}").exists():
                suffix += 1
            run_dir = out / experiment / f"{run_id}-{suffix}"
    except OSError as err:
        raise ValueError(f"--out: cannot write results under {out}: {err.strerror}") from None
    check_writable(run_dir, out)
    return run_dir


def check_writable(folder: Path | str, out: Path | str | None = None) -> None:
    """Creates ``folder`` and writes a probe file in it; a one-line ValueError naming
    ``--out`` (``out``, default ``folder``) where that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out: cannot write results under {out or folder}: "
                         f"{err.strerror}") from None


def environment_manifest() -> dict:
    """Versions, backend and devices of this process (for manifest.json)."""
    import jax

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("jax", "jaxlib", "numpy", "scipy", "optax", "flax", "chex", "matplotlib"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            pass
    from jaxdsm import __version__

    versions["jaxdsm"] = __version__
    devices = jax.devices()
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
