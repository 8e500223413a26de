"""A branch flag that stays one flag under vmap, so ``lax.cond`` stays a real branch."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_batching.custom_vmap
def for_whole_batch(ok: jax.Array) -> jax.Array:
    """Identity on an unbatched flag; under vmap, one flag for the whole batch (all).

    A ``lax.cond`` whose predicate is batched becomes a select that runs both branches
    for every element. Reducing the flag over the batch keeps a real branch: the batch
    takes the cheap branch only when every element may.
    """
    return ok


@for_whole_batch.def_vmap
def _for_whole_batch_vmap(axis_size, in_batched, ok):
    del axis_size
    # Calling the custom function again keeps the rule in force for an outer vmap.
    return for_whole_batch(jnp.all(ok) if in_batched[0] else ok), False
