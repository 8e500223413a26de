"""Argument checks for the Python boundary.

Each raises a one-line ``ValueError`` naming the argument. Checks on values are skipped
when the value is a tracer (inside jit/vmap nothing raises; outputs carry status flags).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import jax
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_n(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 2, got {n!r}")
    if n < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {n}")
    return int(n)


def check_positive_int(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def check_non_negative_int(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {k!r}")
    return int(k)


def check_choice(value, choices: Iterable[str], name: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_temperature(temperature, name: str = "temperature") -> None:
    """T must be finite and > 0 (each entry, when an array)."""
    if not _is_concrete(temperature):
        return
    t = np.asarray(temperature, dtype=np.float64)
    if t.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(t)) or not np.all(t > 0):
        bad = t[~(np.isfinite(t) & (t > 0))].ravel()[0]
        raise ValueError(f"{name} must be finite and > 0, got {bad}")


def check_square(x, name: str) -> None:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise ValueError(f"{name} must be a square (n, n) matrix with n >= 2, got shape {shape}")
    if _is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} contains NaN or infinite entries")


def check_positive_float(x, name: str) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {x!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return value


def check_in_range(
    x, name: str, low: float = 0.0, high: float = math.inf, *, include_low: bool = False,
    include_high: bool = True,
) -> None:
    """Every entry of x is finite and in the interval (low, high] (ends set by the flags).

    Skipped for tracers, so factories can be built inside jit/vmap (e.g. vmapped over a
    hyper-parameter); concrete values are checked at the Python boundary.
    """
    if not _is_concrete(x):
        return
    try:
        values = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    above = values >= low if include_low else values > low
    below = values <= high if include_high else values < high
    ok = np.isfinite(values) & above & below
    if values.size == 0 or not np.all(ok):
        bad = values[~ok].ravel()[0] if values.size else x
        if math.isinf(high):
            interval = f"{'>=' if include_low else '>'} {low:g}"
        else:
            left, right = "[" if include_low else "(", "]" if include_high else ")"
            interval = f"in {left}{low:g}, {high:g}{right}"
        raise ValueError(f"{name} must be finite and {interval}, got {bad}")
