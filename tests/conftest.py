"""Shared test setup: headless matplotlib, float32 by default, an rng and an x64 fixture."""

from __future__ import annotations

import os
import sys
import zlib

# Headless figures; must be set before anything imports matplotlib.
os.environ["MPLBACKEND"] = "Agg"
# One CPU device for the whole session, whichever test starts JAX first: the in-process CLI
# tests would otherwise split the CPU (jaxdsm.distributed.split_cpu) for every later test.
# Tests of several devices ask for them explicitly in subprocesses.
os.environ.setdefault("JAXDSM_CPU_DEVICES", "1")

# `import reference` works whatever pytest's import mode or a future tests/__init__.py.
_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import jax  # noqa: E402 (after the sys.path and env set-up above)
import numpy as np  # noqa: E402 (after the sys.path and env set-up above)
import pytest  # noqa: E402 (after the sys.path and env set-up above)

# float32 is the default (also when JAX_ENABLE_X64 is set in the environment): tolerances
# are float32 ones, and x64 is enabled only inside the `x64` fixture.
jax.config.update("jax_enable_x64", False)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy Generator seeded from the test's id: reproducible and independent per test.

    Set JAXDSM_TEST_SEED=<int> to draw other data (to check that tolerances are not tuned
    to one seed)."""
    salt = int(os.environ.get("JAXDSM_TEST_SEED", "0"))
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), salt])


@pytest.fixture
def x64():
    """Enables float64 in JAX for one test and restores the previous setting afterwards."""
    if hasattr(jax, "enable_x64"):  # jax >= 0.4.36
        context = jax.enable_x64(True)
    else:
        from jax.experimental import enable_x64

        context = enable_x64()
    with context:
        yield
    assert not jax.config.jax_enable_x64
