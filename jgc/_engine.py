"""The one engine: a finite-difference stencil along a set of probe directions.

For probe i the probe set gives a direction d_i (a vector like θ) and a step h_i; the
engine evaluates J(θ + o·h_i·d_i) for the stencil's offsets o and combines them into
the directional derivative ≈ ⟨∇J(θ), d_i⟩. Probes are evaluated with `jax.vmap` in
chunks of `chunk_size` (`jax.lax.map(..., batch_size=...)`), so memory is
O(chunk_size · n) and the probe directions are built inside each chunk. The engine
knows nothing about which check it serves.

With several devices (`jax.device_count() > 1`) the probes are spread over all of them:
the probe indices are laid out as (devices, probes per device) with a sharding constraint
over a one-axis Mesh, and each device maps its share in chunks. Every probe is computed by
the same code on one device, so the results do not depend on the number of devices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
      (num_probes, len(stencil.offsets)); number of loss evaluations the probes need).
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
        # values may be vectors (JVP/HVP checks); a complex step keeps the imaginary part of Σ w·g
        return jnp.real(jnp.tensordot(weights, values, axes=1)) / h, values

    (derivs, values), num_run = _map_probes(one, num_probes, chunk_size)
    # The evaluations the probes need: the padding (fewer probes than chunks × devices) is
    # not counted, so a result does not depend on the chunking or on the number of devices.
    del num_run
    num_evals = num_probes * stencil.evals_per_probe + int(stencil.uses_center)
    return derivs, values, num_evals


def _probe_mesh() -> Mesh | None:
    """A Mesh over all devices along the probe axis, or None on a single device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), ("probes",)) if len(devices) > 1 else None


def place(leaves: list) -> list:
    """Make committed input arrays compatible with the probe mesh (host-side, before jit).

    An array committed to some of the devices (e.g. `jax.device_put(x, jax.devices()[1])`)
    cannot meet the probe sharding over all devices in one jitted computation; such arrays
    are replicated over the mesh. Uncommitted arrays, tracers and a single device: unchanged.
    """
    mesh = _probe_mesh()
    if mesh is None:
        return leaves
    devices, replicated = set(mesh.devices.flat), NamedSharding(mesh, PartitionSpec())

    def fix(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.committed and x.sharding.device_set != devices:
            return jax.device_put(x, replicated)
        return x

    return [fix(x) for x in leaves]


def _map_probes(one, num_probes: int, chunk_size: int):
    """`one` over probe indices 0..num_probes-1 in equal chunks, spread over the devices if several.

    The indices are padded with copies of the last probe to devices × chunks × chunk_size
    (their results are dropped): with equal chunks the loop body compiles once, where
    `lax.map`'s ragged remainder would compile the loss a second time.

    Returns:
      (the outputs of `one` stacked over the probes, the number of probes evaluated).
    """
    mesh = _probe_mesh() if num_probes > 1 else None
    devices = 1 if mesh is None else mesh.size
    per_device = -(-num_probes // devices)
    num_chunks = -(-per_device // chunk_size)
    chunk_size = -(-per_device // num_chunks)
    total = devices * num_chunks * chunk_size
    index = jnp.minimum(jnp.arange(total), num_probes - 1).reshape(devices, num_chunks, chunk_size)

    def run(rows):  # (num_chunks, chunk_size) → outputs shaped (num_chunks, chunk_size, ...)
        if num_chunks == 1:  # a plain vmap compiles faster than a one-step loop
            return jax.tree_util.tree_map(lambda x: x[None], jax.vmap(one)(rows[0]))
        return jax.lax.map(jax.vmap(one), rows)

    if mesh is None:
        out = jax.tree_util.tree_map(lambda x: x[None], run(index[0]))
    else:
        index = jax.lax.with_sharding_constraint(index, NamedSharding(mesh, PartitionSpec("probes")))
        out = jax.vmap(run)(index)
    out = jax.tree_util.tree_map(lambda x: x.reshape((total,) + x.shape[3:])[:num_probes], out)
    if mesh is not None:  # gather on every device, so that reductions downstream add in one-device order
        out = jax.lax.with_sharding_constraint(out, NamedSharding(mesh, PartitionSpec()))
    return out, total
