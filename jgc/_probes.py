"""Probe sets: which directions the engine differentiates along.

A probe set is a function from a probe index (a traced integer) to a direction and a
step; directions are built one at a time inside the engine's chunks, never as an
n × n matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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


def leaf_directions(theta: jax.Array, eps, segments, num_leaves: int, per_leaf: int, key: jax.Array):
    """Random directions confined to one leaf each: probe i moves only leaf i // per_leaf.

    `segments[j]` is the leaf (0..num_leaves-1) of coordinate j (`_tree.segment_ids`; all
    zeros gives directions over the whole of θ). Directions are Gaussian, drawn from
    `fold_in(key, i)` and scaled to max |d_j| = 1; the step is eps·max(1, max |θ_j|)
    over the leaf, like a coordinate step.
    """
    seg = jnp.asarray(segments, jnp.int32)
    scale = jax.ops.segment_max(jnp.abs(theta), seg, num_segments=num_leaves)

    def probe(i):
        leaf = i // per_leaf
        d = jax.random.normal(jax.random.fold_in(key, i), theta.shape, theta.dtype)
        d = jnp.where(seg == leaf, d, 0)
        m = jnp.max(jnp.abs(d), initial=0)
        d = jnp.where(m > 0, d / jnp.where(m > 0, m, 1), d)
        return d, jnp.asarray(eps, theta.dtype) * jnp.maximum(1, scale[leaf])

    return probe


def block_directions(theta: jax.Array, eps, starts: jax.Array, lens: jax.Array, key: jax.Array):
    """Random unit directions, probe i supported on the block θ[starts[i] : starts[i] + lens[i]].

    The direction is uniform on the unit sphere of the block (a normal vector, masked and
    normalised), its sign fixed so the block's first entry is positive: a block of one
    coordinate gives e_j. The step is eps·max(1, rms of θ on the block) (for one coordinate,
    the coordinate step), and the direction is rounded so that θ + h·d is the point the
    loss actually sees. Probe i draws from `jax.random.fold_in(key, i)`.
    """
    n = theta.shape[0]
    pos = jnp.arange(n)
    eps = jnp.asarray(eps, theta.dtype)
    starts, lens = jnp.asarray(starts), jnp.asarray(lens)

    def probe(i):
        start, size = starts[i], lens[i]
        inside = (pos >= start) & (pos < start + size)
        z = jnp.where(inside, jax.random.normal(jax.random.fold_in(key, i), (n,), theta.dtype), 0)
        z = jnp.where(z[start] < 0, -z, z)
        v = z / jnp.sqrt(jnp.sum(z * z))
        rms = jnp.sqrt(jnp.sum(jnp.where(inside, theta * theta, 0)) / size.astype(theta.dtype))
        h = eps * jnp.maximum(1, rms)
        return ((theta + h * v) - theta) / h, h

    return probe


def leaf_blocks(offsets, sizes, num: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lens) for `num` probes on each leaf, leaf after leaf."""
    return np.repeat(np.asarray(offsets, np.int32), num), np.repeat(np.asarray(sizes, np.int32), num)


def project(vector: jax.Array, probe, num_probes: int, chunk_size: int) -> jax.Array:
    """⟨vector, d_i⟩ for every probe direction d_i (the analytic directional derivatives)."""
    return jax.lax.map(lambda i: jnp.vdot(vector, probe(i)[0]), jnp.arange(num_probes), batch_size=chunk_size)
