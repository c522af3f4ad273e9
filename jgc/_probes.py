"""Probe sets: the directions the engine differentiates along.

Two kinds, one convention:

- `COORDS`: probe i moves coordinate `index[i]` alone (a one-hot direction e_j);
- `BLOCKS`: probe i moves the block θ[start[i] : start[i] + length[i]] along a random
  direction, uniform on the block's unit sphere, drawn from `fold_in(key, ident[i])`.
  A block of one coordinate is e_j.

Every probe carries a base step `base[i]`: the step is base·max(1, |θ_j|) for a
coordinate and base·max(1, rms of θ on the block) for a block, rounded so that θ + h·d is
exactly the point the loss sees and the stencil divides by the step the loss really saw.
A probe with base 0 does not move θ: it evaluates J(θ) (the engine pads chunks with such
*null* probes, and uses one to read J(θ) from the same compiled program).

Directions are built one at a time inside the engine's chunks, never as an n × n matrix.
Probe arrays are NumPy on the host and jax arrays under a trace; `Probes` is a pytree.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._typing import Array

COORDS = "coords"
BLOCKS = "blocks"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Probes:
    """A probe set: per-probe arrays (leading axis: probe) and the kind (static)."""

    start: Array  # coordinate j (COORDS) or the block's first coordinate (BLOCKS), int32
    base: Array  # base step; 0 for a null probe
    length: Array | None = None  # BLOCKS: block length, int32
    ident: Array | None = None  # BLOCKS: the probe's number for fold_in(key, ident)
    kind: str = dataclasses.field(default=COORDS, metadata=dict(static=True))

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def take(self, rows) -> Probes:
        return jax.tree_util.tree_map(lambda x: x[rows], self)


def blocks(start, length, base, ident=None) -> Probes:
    """Random unit directions on blocks; `ident` numbers the probes (default 0, 1, …)."""
    start, length = np.asarray(start, np.int32), np.asarray(length, np.int32)
    ident = np.arange(start.shape[0], dtype=np.int32) if ident is None else np.asarray(ident, np.int32)
    return Probes(start, np.broadcast_to(np.asarray(base), start.shape), length, ident, BLOCKS)


def leaf_blocks(offsets, sizes, num: int, base) -> Probes:
    """`num` random directions on each leaf, leaf after leaf."""
    return blocks(np.repeat(np.asarray(offsets), num), np.repeat(np.asarray(sizes), num), base)


def concat(*sets: Probes) -> Probes:
    """One probe set from several of the same kind (host-side)."""
    return jax.tree_util.tree_map(lambda *x: np.concatenate([np.asarray(v) for v in x]), *sets)


def concat_like(a: Probes, b: Probes, xp) -> Probes:
    """`a` then `b` (same kind), on the host (NumPy) or under a trace (jax.numpy)."""
    return jax.tree_util.tree_map(lambda x, y: xp.concatenate([xp.asarray(x), xp.asarray(y).astype(xp.asarray(x).dtype)]), a, b)


def pad(probes: Probes, total: int) -> Probes:
    """`probes` followed by null probes (base 0) up to `total` probes (host-side)."""
    extra = total - len(probes)
    if extra <= 0:
        return probes
    zeros = lambda x: np.concatenate([np.asarray(x), np.zeros((extra,) + np.shape(x)[1:], np.asarray(x).dtype)])  # noqa: E731
    out = jax.tree_util.tree_map(zeros, probes)
    if probes.kind == BLOCKS:
        out = dataclasses.replace(out, length=np.concatenate([np.asarray(probes.length), np.ones(extra, np.int32)]))
    return out


def coordinate_step(theta_j, base):
    """The step for coordinate j: base·max(1, |θ_j|), rounded so that θ_j + h is exact.

    Relative steps keep h well above the spacing of floats near large θ_j; the
    rounding trick (h := (θ_j + h) − θ_j) makes the step the stencil divides by the
    one the loss actually saw.
    """
    h = base * jnp.maximum(1.0, jnp.abs(theta_j))
    return (theta_j + h) - theta_j


def as_jax(probes: Probes) -> Probes:
    """The probe arrays as jax arrays, so a traced index can take from them: inside a compiled
    program they already are; under `jax.disable_jit()` the programs run eagerly and receive
    the host's NumPy arrays, which cannot be indexed by a tracer (of the chunk's `vmap`)."""
    return jax.tree_util.tree_map(jnp.asarray, probes)


def _threefry(key):
    """A threefry key for the directions: `key` itself when it is one, else one derived from its data.

    The "rbg" and "unsafe_rbg" implementations do not promise the same bits under `vmap` as
    unbatched, and the engine draws a probe's direction inside its chunk's vmap while a rule
    (a JVP or HVP check) draws it in a loop: derived threefry bits are the same in both."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl, data = str(jax.random.key_impl(key)), jax.random.key_data(key)
    else:  # a legacy raw key: of the default implementation
        impl, data = str(jax.config.jax_default_prng_impl), key
    if "threefry" in impl:
        return key
    out = jax.random.key(0, impl="threefry2x32")
    words = jnp.ravel(data)
    for w in range(words.shape[0]):
        out = jax.random.fold_in(out, words[w])
    return out


def direction(probes: Probes, i, theta: jax.Array, key=None):
    """Probe i (a traced scalar index into the arrays) as (direction d, shape (n,); step h)."""
    probes = as_jax(probes)
    base = jnp.asarray(probes.base[i], theta.dtype)
    start = probes.start[i]
    if probes.kind == COORDS:
        return jnp.zeros_like(theta).at[start].set(1), coordinate_step(theta[start], base)
    assert probes.length is not None and probes.ident is not None and key is not None
    n = theta.shape[0]
    pos = jnp.arange(n)
    size = probes.length[i]
    inside = (pos >= start) & (pos < start + size)
    # drawn in float32 whatever θ's dtype, so a float64 re-check measures along the same direction
    z = jax.random.normal(jax.random.fold_in(_threefry(key), probes.ident[i]), (n,), jnp.float32).astype(theta.dtype)
    z = jnp.where(inside, z, 0)
    z = jnp.where(z[start] < 0, -z, z)
    v = z / jnp.sqrt(jnp.sum(z * z))
    rms = jnp.sqrt(jnp.sum(jnp.where(inside, theta * theta, 0)) / size.astype(theta.dtype))
    h = base * jnp.maximum(1, rms)
    safe = jnp.where(h == 0, 1, h)
    return jnp.where(h == 0, v, ((theta + h * v) - theta) / safe), h


def project(probes: Probes, i, vector: jax.Array, theta: jax.Array, key=None):
    """⟨vector, d_i⟩: the analytic directional derivative along probe i."""
    if probes.kind == COORDS:
        return vector[as_jax(probes).start[i]]
    # jgc's own product: at full precision whatever jax_default_matmul_precision says
    return jnp.vdot(vector, direction(probes, i, theta, key)[0], precision=jax.lax.Precision.HIGHEST)


# ---------------------------------------------------------------- sampled coordinates


def allocate(sizes: tuple[int, ...], k: int) -> tuple[int, ...]:
    """How many of k coordinates each leaf gets: equal shares, capped by the leaf's size,
    the surplus of small leaves shared among the others (water filling). Every leaf of
    nonzero size gets at least one; the total is max(min(k, n), number of such leaves).

    Examples:
      >>> allocate((1000, 10, 3), 30)
      (17, 10, 3)
    """
    counts = [0] * len(sizes)
    live = [i for i in range(len(sizes)) if sizes[i]]
    left, open_ = max(k, len(live)), sorted(live, key=lambda i: sizes[i])
    while open_:
        share = left // len(open_)
        i = open_[0]
        if sizes[i] <= share:  # the smallest leaf is fully checked
            counts[i] = sizes[i]
            left -= sizes[i]
            open_.pop(0)
            continue
        extra = left - share * len(open_)
        for r, i in enumerate(open_):  # the largest leaves take the remainder
            counts[i] = share + (r >= len(open_) - extra)
        break
    return tuple(max(1, c) if s else 0 for c, s in zip(counts, sizes, strict=True))


def draw(xp, key, *, lay, counts: tuple[int, ...]):
    """Flat θ indices: counts[k] distinct coordinates of leaf k, drawn uniformly, leaf after leaf."""
    parts = []
    for k, (offset, size, m) in enumerate(zip(lay.offsets, lay.sizes, counts, strict=True)):
        if m == size:
            parts.append(xp.arange(offset, offset + size, dtype=np.int32))
        else:
            pick = jax.random.choice(jax.random.fold_in(key, k), size, (m,), replace=False)
            parts.append((offset + xp.sort(xp.asarray(pick))).astype(np.int32))
    return xp.concatenate(parts)
