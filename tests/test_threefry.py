"""jaxdsm's written-out threefry draw against jax.random.uniform itself, bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdsm import _threefry
from jaxdsm.sinkhorn import random_cost


def _bits(x):
    x = np.asarray(x)
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def _uses_jax_threefry(key, shape, dtype):
    """Whether ``_threefry.uniform`` fell back to jax.random (its threefry primitive)."""
    return "threefry2x32" in str(jax.make_jaxpr(lambda k: _threefry.uniform(k, shape, dtype))(key))


@pytest.mark.parametrize("shape", [(64, 64), (7, 3), (1,), (2, 3, 5), (300, 301)])
def test_uniform_has_jax_bits_for_many_keys(shape):
    keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.PRNGKey(11), t))(jnp.arange(200))
    mine = jax.jit(jax.vmap(lambda k: _threefry.uniform(k, shape, jnp.float32)))(keys)
    theirs = jax.jit(jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32)))(keys)
    np.testing.assert_array_equal(_bits(mine), _bits(theirs))
    assert not _uses_jax_threefry(keys[0], shape, jnp.float32)


def test_uniform_float64_has_jax_bits(x64):
    key = jax.random.PRNGKey(5)
    mine = _threefry.uniform(key, (33, 40), jnp.float64)
    np.testing.assert_array_equal(_bits(mine), _bits(jax.random.uniform(key, (33, 40), jnp.float64)))
    assert mine.dtype == jnp.float64 and not _uses_jax_threefry(key, (33, 40), jnp.float64)


def test_typed_threefry_keys_take_the_fast_path():
    key = jax.random.key(3)
    np.testing.assert_array_equal(_bits(_threefry.uniform(key, (16, 16), jnp.float32)),
                                  _bits(jax.random.uniform(key, (16, 16))))
    assert not _uses_jax_threefry(key, (16, 16), jnp.float32)


@pytest.mark.parametrize("case", ["rbg key", "bfloat16", "not partitionable"])
def test_other_keys_dtypes_and_configs_call_jax_random(case):
    key, dtype = jax.random.PRNGKey(2), jnp.float32
    if case == "rbg key":
        key = jax.random.key(2, impl="rbg")
    if case == "bfloat16":
        dtype = jnp.bfloat16
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", case != "not partitionable")
    try:
        mine = _threefry.uniform(key, (8, 8), dtype)
        expected = jax.random.uniform(key, (8, 8), dtype)
        traced = str(jax.make_jaxpr(lambda k: _threefry.uniform(k, (8, 8), dtype))(key))
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
    np.testing.assert_array_equal(np.asarray(mine, np.float32), np.asarray(expected, np.float32))
    assert "random_bits" in traced or "threefry2x32" in traced


def test_random_cost_is_jax_uniform():
    key = jax.random.PRNGKey(9)
    np.testing.assert_array_equal(_bits(random_cost(key, 64)),
                                  _bits(jax.random.uniform(key, (64, 64))))
