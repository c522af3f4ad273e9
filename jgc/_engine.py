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
      loss: scalar function of the flat parameter vector θ.
      theta: the point, shape (n,).
      probe: maps a probe index (traced int) to (direction d, shape (n,); step h, scalar).
      num_probes: how many probes (a Python int).
      stencil: the finite-difference stencil.
      chunk_size: probes per vmapped batch; `None` picks one from n.

    Returns:
      (derivatives, shape (num_probes,); loss values at the stencil points, shape
      (num_probes, len(stencil.offsets)); number of loss evaluations).
    """
    if chunk_size is None:
        chunk_size = default_chunk_size(theta.size, num_probes, stencil)
    center = loss(theta) if stencil.uses_center else None
    # A complex stencil (complex step) perturbs θ along the imaginary axis.
    odtype = jnp.result_type(theta.dtype, jnp.complex64) if stencil.complex else theta.dtype
    offsets = jnp.asarray([o for o in stencil.offsets if o != 0], odtype)

    def one(i):
        d, h = probe(i)
        shifted = jax.vmap(lambda o: loss(theta + (o * h) * d))(offsets)
        values, it = [], iter(shifted)
        for o in stencil.offsets:
            values.append(center if o == 0 else next(it))
        values = jnp.stack(values)
        weights = jnp.asarray(stencil.weights, values.dtype)
        return jnp.real(jnp.tensordot(weights, values, axes=1)) / h, values

    derivs, values = jax.lax.map(one, jnp.arange(num_probes), batch_size=chunk_size)
    num_evals = num_probes * stencil.evals_per_probe + int(stencil.uses_center)
    return derivs, values, num_evals
