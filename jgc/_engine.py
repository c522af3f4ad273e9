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
    offsets = jnp.asarray([o for o in stencil.offsets if o != 0], theta.dtype)

    def one(i):
        d, h = probe(i)
        shifted = jax.vmap(lambda o: loss(theta + (o * h) * d))(offsets)
        values, it = [], iter(shifted)
        for o in stencil.offsets:
            values.append(center if o == 0 else next(it))
        values = jnp.stack(values)
        weights = jnp.asarray(stencil.weights, values.dtype)
        return jnp.sum(weights * values) / h, values

    derivs, values = _map_probes(one, num_probes, chunk_size)
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
    """`one` over probe indices 0..num_probes-1, in chunks, spread over the devices if several.

    The index array is padded to a multiple of the device count with copies of the last
    probe (their results are dropped; at most devices − 1 probes are evaluated twice).
    """
    mesh = _probe_mesh()
    if mesh is None or num_probes < 2:
        return jax.lax.map(one, jnp.arange(num_probes), batch_size=chunk_size)
    per = -(-num_probes // mesh.size)
    index = jnp.minimum(jnp.arange(mesh.size * per), num_probes - 1).reshape(mesh.size, per)
    index = jax.lax.with_sharding_constraint(index, NamedSharding(mesh, PartitionSpec("probes")))
    out = jax.vmap(lambda row: jax.lax.map(one, row, batch_size=min(chunk_size, per)))(index)
    out = jax.tree_util.tree_map(lambda x: x.reshape((mesh.size * per,) + x.shape[2:])[:num_probes], out)
    # Gather the results on every device, so that reductions downstream add in one-device order.
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, PartitionSpec()))
