"""The one engine: a finite-difference stencil along a set of probe directions.

For probe i the probe set gives a direction d_i (a vector like θ) and a step h_i; the
engine evaluates J(θ + o·h_i·d_i) for the stencil's offsets o and combines them into
the directional derivative ≈ ⟨∇J(θ), d_i⟩. Probes are evaluated with `jax.vmap` in
chunks of `chunk_size` (`jax.lax.map(..., batch_size=...)`), so memory is
O(chunk_size · n) and the probe directions are built inside each chunk. The engine
knows nothing about which check it serves.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._stencils import Stencil

# Memory budget for one chunk of perturbed parameter vectors, in array elements.
_CHUNK_ELEMENTS = 2**23
_MAX_CHUNK = 256


def default_chunk_size(n: int, num_probes: int, stencil: Stencil) -> int:
    """A chunk that keeps the perturbed copies of θ under ~`_CHUNK_ELEMENTS` elements."""
    per_probe = max(1, n * stencil.evals_per_probe)
    return int(max(1, min(num_probes, _MAX_CHUNK, _CHUNK_ELEMENTS // per_probe)))


def directional_derivatives(
    loss: Callable[[jax.Array], jax.Array],
    theta: jax.Array,
    probe: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    num_probes: int,
    stencil: Stencil,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array, int]:
    """Finite-difference directional derivatives of `loss` at θ along `num_probes` probes.

    Args:
      loss: scalar function of the flat parameter vector θ (a function returning a
        vector of shape (m,) also works: derivatives then have shape (num_probes, m)).
      theta: the point, shape (n,).
      probe: maps a probe index (traced int) to (direction d, shape (n,); step h, scalar).
      num_probes: how many probes (a Python int).
      stencil: the finite-difference stencil.
      chunk_size: probes per vmapped batch; `None` picks one from n.

    Returns:
      (derivatives, shape (num_probes,); loss values at the stencil points, shape
      (num_probes, len(stencil.offsets)); number of loss evaluations, the padding of the
      last chunk included).
    """
    if chunk_size is None:
        chunk_size = default_chunk_size(theta.size, num_probes, stencil)
    center = loss(theta) if stencil.uses_center else None
    offsets = jnp.asarray([o for o in stencil.offsets if o != 0], theta.dtype)

    def one(i):
        d, h = probe(i)
        shifted = jax.vmap(lambda o: loss(theta + (o * h) * d))(offsets)
        values, it = [], iter(shifted)
        for o in stencil.offsets:
            values.append(center if o == 0 else next(it))
        values = jnp.stack(values)
        weights = jnp.asarray(stencil.weights, values.dtype)
        return jnp.tensordot(weights, values, axes=1) / h, values  # values may be vectors (JVP/HVP checks)

    # Equal chunks, the last one padded with repeats of the last probe: the loop body is
    # then compiled once (lax.map's ragged remainder would compile the loss a second time).
    num_chunks = -(-num_probes // chunk_size)
    chunk_size = -(-num_probes // num_chunks)
    index = jnp.minimum(jnp.arange(num_chunks * chunk_size), num_probes - 1).reshape(num_chunks, chunk_size)
    if num_chunks == 1:  # a plain vmap compiles faster than a one-step loop
        derivs, values = jax.vmap(one)(index[0])
    else:
        derivs, values = jax.lax.map(jax.vmap(one), index)
        derivs, values = (
            derivs.reshape((-1,) + derivs.shape[2:])[:num_probes],
            values.reshape((-1,) + values.shape[2:])[:num_probes],
        )
    # Counted as run: padding probes (fewer than num_chunks) are real loss evaluations.
    num_evals = num_chunks * chunk_size * stencil.evals_per_probe + int(stencil.uses_center)
    return derivs, values, num_evals
