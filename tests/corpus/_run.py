"""Batches of checks over the corpus, shared by the tests and benchmarks/verdicts.py.

`variants_at(models, dtype, keys)` lays out every variant (correct, then each bug) of
every model at every point `m.init(key, dtype)`, with the bug's measured size there;
the caller runs one check over the batch with `batch.map(fn)(batch.params,
batch.variant, batch.args)` (fn calls its checker on `batch.loss_fn, batch.grad_fn`)
and reads the outcome with `outcome(batch, result)`. No checker is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._model import Model, group_variants


class Batch(NamedTuple):
    loss_fn: Callable[..., Any]  # loss_fn(params, variant, args_by_model)
    grad_fn: Callable[..., Any]
    names: list[tuple[str, str]]  # per variant: (model name, "correct" or bug name)
    leaves: list[str | None]  # per variant: the wrong leaf's path (None for the correct gradient)
    owners: list[int]  # per variant: index of its model
    params: Any  # rows: variant-major, then point
    variant: jax.Array
    args: Any
    points: int
    map: Callable  # map(fn)(params, variant, args): vmap for one model, lax.map for several
    sizes: np.ndarray  # (variants, points, leaves): relative error per leaf against jax.grad in float64


def _leaf_rel_errors(true, bad):
    out = []
    for t, b in zip(jax.tree.leaves(true), jax.tree.leaves(bad)):
        t, b = jnp.ravel(t), jnp.ravel(b)
        den = jnp.linalg.norm(t) + jnp.linalg.norm(b)
        out.append(jnp.where(den == 0, 0.0, jnp.linalg.norm(b - t) / jnp.where(den == 0, 1.0, den)))
    return jnp.stack(out)


def _to64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def variants_at(models: list[Model], dtype, keys: jax.Array) -> Batch:
    """Every variant of `models` (one model, or several with the same `params_signature`) at
    `m.init(key, dtype)` for each key; each bug's size is measured at that very point (its
    params cast to float64, true gradient = jax.grad in float64)."""
    loss, grad, names, leaves, owners = group_variants(models)
    v, s = len(names), keys.shape[0]
    points = [jax.vmap(lambda k, m=m: m.init(k, dtype))(keys) for m in models]
    params = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[points[j][0] for j in owners])
    args = jax.tree.map(lambda x: jnp.concatenate([x] * v), tuple(a for _, a in points))
    variant = jnp.repeat(jnp.arange(v, dtype=jnp.int32), s)
    # one model: every variant's gradient runs under vmap (cheap); several: lax.map runs each row's model only
    batch = jax.vmap if len(models) == 1 else lambda f: lambda *xs: jax.lax.map(lambda x: f(*x), xs)

    owner_of = jnp.asarray(owners, jnp.int32)
    autodiff = [lambda p, a, j=j, m=m: jax.grad(m.loss_fn)(p, *a[j]) for j, m in enumerate(models)]
    true = lambda p, i, a: jax.lax.switch(owner_of[i], autodiff, p, a)  # noqa: E731
    with jax.enable_x64(True):
        sizes = jax.jit(batch(lambda p, i, a: _leaf_rel_errors(true(p, i, a), grad(p, i, a))))(
            _to64(params), variant, _to64(args)
        )
        sizes = np.asarray(sizes).reshape(v, s, -1)
    return Batch(loss, grad, names, leaves, owners, params, variant, args, s, batch, sizes)


class Outcome(NamedTuple):
    passed: np.ndarray  # (variants, points)
    inconclusive: np.ndarray  # (variants, points); all False when the result has no `inconclusive` field
    has_inconclusive: bool
    localised: np.ndarray  # (variants, points): not passed and the wrong leaf failed (False for correct rows)
    size: np.ndarray  # (variants, points): the bug's relative error on its wrong leaf (0 for correct rows)


def outcome(b: Batch, res) -> Outcome:
    """Read a batched result (`.passed`, `.leaf_passed`, `.layout.paths`, maybe `.inconclusive`)."""
    v, s = len(b.names), b.points
    passed = np.asarray(res.passed).reshape(v, s)
    inc = getattr(res, "inconclusive", None)
    inconclusive = np.zeros_like(passed) if inc is None else np.asarray(inc).reshape(v, s)
    leaf_passed = [np.asarray(x).reshape(v, s) for x in jax.tree.leaves(res.leaf_passed)]
    localised = np.zeros_like(passed)
    size = np.zeros(passed.shape)
    for i, leaf in enumerate(b.leaves):
        if leaf is not None:
            w = res.layout.paths.index(leaf)
            localised[i] = ~passed[i] & ~leaf_passed[w][i]
            size[i] = b.sizes[i, :, w]
    return Outcome(passed, inconclusive, inc is not None, localised, size)
