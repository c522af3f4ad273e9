"""Probe sets: which directions the engine differentiates along.

A probe set is a function from a probe index (a traced integer) to a direction and a
step; directions are built one at a time inside the engine's chunks, never as an
n × n matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._stencils import coordinate_step


def coordinates(theta: jax.Array, eps, index: jax.Array | None = None):
    """One-hot probes e_j for j = index[i] (every coordinate when `index` is None).

    The step is per coordinate: eps·max(1, |θ_j|), rounded so θ_j + h is exact.
    """

    def probe(i):
        j = i if index is None else index[i]
        d = jnp.zeros_like(theta).at[j].set(1)
        return d, coordinate_step(theta[j], jnp.asarray(eps, theta.dtype))

    return probe
