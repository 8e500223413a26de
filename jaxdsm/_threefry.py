"""``jax.random.uniform`` on [0, 1), the same bits, drawn about 3x faster on CPU.

On CPU, JAX lowers threefry2x32 to a loop over its five groups of four rounds (to keep
compile times short), and each trip streams the counters through memory. Written out
round by round, the 20 rounds and the conversion to floats compile to one XLA fusion
that reads and writes each element once: Exp 1's 64 x 64 costs, 16 per vmapped call,
took 5.8 instead of 17.5 ms per 1000 matrices on one core (BENCHMARKS.md, AMD EPYC
section, "The draw").

Threefry-2x32 with 20 rounds is Salmon et al., "Parallel random numbers: as easy as 1,
2, 3" (SC 2011). What makes the bits JAX's: under ``jax_threefry_partitionable`` (the
default), element i of the output is the threefry block of the counter pair (i >> 32,
i & 0xffffffff), row-major, its two words xored (32-bit) or concatenated (64-bit); the
float keeps the top mantissa bits with the exponent of 1.0, minus 1. The tests compare
the bits with ``jax.random.uniform``; any other key type, dtype or configuration calls
``jax.random.uniform`` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
# (unsigned type, mantissa bits) of the float dtypes drawn here.
_BITS = {np.dtype(np.float32): (np.uint32, 23), np.dtype(np.float64): (np.uint64, 52)}


def uniform(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype)``, bit for bit."""
    dtype = np.dtype(dtype)
    words = _threefry_words(key)
    if words is None or dtype not in _BITS or math.prod(shape) >= 2**32:
        return jax.random.uniform(key, shape, dtype)
    counts = lax.iota(np.uint32, math.prod(shape)).reshape(shape)  # the high words are 0
    high, low = _threefry2x32(words[0], words[1], jnp.zeros(shape, np.uint32), counts)
    unsigned, mantissa = _BITS[dtype]
    if unsigned is np.uint32:
        bits = high ^ low
    else:
        bits = (high.astype(unsigned) << unsigned(32)) | low.astype(unsigned)
    one = np.array(1.0, dtype).view(unsigned)
    floats = lax.bitcast_convert_type((bits >> unsigned(8 * dtype.itemsize - mantissa)) | one,
                                      dtype)
    return jnp.maximum(floats - dtype.type(1), dtype.type(0))


def _threefry_words(key: jax.Array):
    """The two uint32 words of a threefry2x32 key, or None for any other kind of key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        key = jax.random.key_data(key)
    elif jax.config.jax_default_prng_impl != "threefry2x32":
        return None
    if key.shape != (2,) or key.dtype != np.uint32 or not jax.config.jax_threefry_partitionable:
        return None
    return key[0], key[1]


def _threefry2x32(key0, key1, x0, x1):
    """Threefry-2x32-20 of the counter pairs (x0, x1) under the key (key0, key1)."""
    schedule = (key0, key1, key0 ^ key1 ^ _KEY_PARITY)
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for group in range(5):
        for rotation in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(rotation)) | (x1 >> np.uint32(32 - rotation))) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1
