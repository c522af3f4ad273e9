"""`check_grad(..., coords=k, key=...)`: k coordinates drawn at random, stratified by leaf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from . import _check, _engine, _probes, _tree
from ._compare import compare
from ._result import SampledCheck


def allocate(sizes: tuple[int, ...], k: int) -> tuple[int, ...]:
    """How many of k coordinates each leaf gets: equal shares, capped by the leaf's size,
    the surplus of small leaves shared among the others (water filling). Every leaf gets
    at least one; the total is max(min(k, n), number of leaves).

    Examples:
      >>> allocate((1000, 10, 3), 30)
      (17, 10, 3)
    """
    counts = [0] * len(sizes)
    left, open_ = max(k, len(sizes)), sorted(range(len(sizes)), key=lambda i: sizes[i])
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
    return tuple(max(1, c) for c in counts)


def draw(key, lay: _tree.Layout, counts: tuple[int, ...]) -> jax.Array:
    """Flat θ indices: counts[k] distinct coordinates of leaf k, drawn uniformly, leaf after leaf."""
    parts = []
    for k, (offset, size, m) in enumerate(zip(lay.offsets, lay.sizes, counts, strict=True)):
        if m == size:
            parts.append(offset + jnp.arange(size))
        else:
            parts.append(offset + jnp.sort(jax.random.choice(jax.random.fold_in(key, k), size, (m,), replace=False)))
    return jnp.concatenate(parts).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _Spec:
    loss_fn: Callable
    grad_fn: Callable | None
    method: str
    chunk_size: int | None
    coords: int

    def __call__(self, params, args, key, eps, tol):
        lay = _tree.layout(params)
        stencil, theta, eps, tol = _check._setup(self, lay, params, args, eps, tol)
        counts = allocate(lay.sizes, self.coords)
        index = draw(key, lay, counts)
        loss = _check._loss_of_theta(self.loss_fn, lay, params, args)
        probe = _probes.coordinates(theta, eps, index)
        numeric, _, num_evals = _engine.directional_derivatives(loss, theta, probe, len(index), stencil, self.chunk_size)
        analytic = _check._analytic_flat(self, lay, params, args, theta)[index]
        rel_error, passed, leaf_rel, leaf_ok = compare(numeric, analytic, counts, lay.sizes, tol)
        unsampled = jnp.full((lay.n,), jnp.nan, theta.dtype)
        return SampledCheck(
            rel_error=rel_error,
            passed=passed,
            tol=tol,
            eps=eps,
            numeric=_tree.unravel_full(lay, unsampled.at[index].set(numeric)),
            analytic=_tree.unravel_full(lay, unsampled.at[index].set(analytic)),
            leaf_rel_error=_tree.per_leaf(lay, leaf_rel),
            leaf_passed=_tree.per_leaf(lay, leaf_ok, fill=True),
            num_evals=jnp.asarray(num_evals, jnp.int32),
            method=self.method,
            layout=lay,
            sampled=sum(counts),
        )


def check_sampled(loss_fn, grad_fn, params, args, *, coords, key, eps, tol, method, chunk_size) -> SampledCheck:
    """`check_grad` on `coords` sampled coordinates (validated inputs, prepared params)."""
    from ._directions import check_count, check_key

    if coords is None or key is None:
        raise ValueError(f"a sampled check needs both coords and key; received coords={coords!r}, key={key!r}.")
    check_count("coords", coords)
    check_key(key)
    return _check._call(_Spec(loss_fn, grad_fn, method, chunk_size, int(coords)), params, args, key=key, eps=eps, tol=tol)
