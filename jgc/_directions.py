"""`jgc.check_directions`: random directions, each supported on one leaf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _engine, _probes, _tree
from ._compare import compare
from ._result import DirectionCheck
from ._typing import PyTree


def check_key(key) -> None:
    """`key` must be a PRNG key: a typed key array or a raw uint32 key of shape (2,)."""
    if isinstance(key, jax.core.Tracer):
        return
    ok = hasattr(key, "dtype") and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == () or key.dtype == jnp.uint32 and key.shape == (2,)
    )
    if not ok:
        raise TypeError(
            f"key must be a PRNG key, e.g. jax.random.key(0); received {type(key).__name__} "
            f"{getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}."
        )


def check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {value!r}.")


@dataclasses.dataclass(frozen=True)
class _Spec:
    loss_fn: Callable
    grad_fn: Callable | None
    method: str
    chunk_size: int | None
    num: int

    def __call__(self, params, args, key, eps, tol):
        lay = _tree.layout(params)
        stencil, theta, eps, tol = _check._setup(self, lay, params, args, eps, tol)
        starts, lens = _probes.leaf_blocks(lay.offsets, lay.sizes, self.num)
        probe = _probes.block_directions(theta, eps, starts, lens, key)
        loss = _check._loss_of_theta(self.loss_fn, lay, params, args)
        p = len(starts)
        chunk = self.chunk_size or _engine.default_chunk_size(lay.n, p, stencil)
        numeric, _, num_evals = _engine.directional_derivatives(loss, theta, probe, p, stencil, chunk)
        analytic = _probes.project(_check._analytic_flat(self, lay, params, args, theta), probe, p, chunk)
        counts = (self.num,) * len(lay.sizes)
        rel_error, passed, leaf_rel, leaf_ok = compare(numeric, analytic, counts, lay.sizes, tol)
        return DirectionCheck(
            rel_error=rel_error,
            passed=passed,
            tol=tol,
            eps=eps,
            numeric=_per_leaf_vectors(lay, numeric, self.num),
            analytic=_per_leaf_vectors(lay, analytic, self.num),
            leaf_rel_error=_tree.per_leaf(lay, leaf_rel),
            leaf_passed=_tree.per_leaf(lay, leaf_ok, fill=True),
            num_evals=jnp.asarray(num_evals, jnp.int32),
            method=self.method,
            layout=lay,
            num_directions=self.num,
        )


def _per_leaf_vectors(lay, values, num):
    """A pytree like the params whose checked leaf k is values[k·num : (k+1)·num] (NaN elsewhere)."""
    leaves = [jnp.full((num,), jnp.nan, values.dtype) for _ in lay.shapes]
    for k, i in enumerate(lay.checked_index):
        leaves[i] = values[k * num : (k + 1) * num]
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def check_directions(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    params: PyTree,
    *args,
    key: jax.Array,
    num: int = 8,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> DirectionCheck:
    """A fast verdict: compare directional derivatives along `num` random directions per leaf.

    For every checked leaf, `num` directions v are drawn uniformly on the unit sphere of
    that leaf's coordinates (zero on every other leaf, so a large leaf cannot hide an
    error in a small one). The finite-difference derivative of the loss along v is
    compared with ⟨grad_fn, v⟩. Cost: `num · (number of leaves) · 2` loss evaluations for
    "central", whatever the number of coordinates. Every squared norm of the full check
    is estimated without bias from the directions (E⟨x, v⟩² = ‖x‖²/s on a leaf of s
    coordinates), so `rel_error` and `leaf_rel_error` estimate the full check's values; see
    docs/scale.md for how close. Pure, like `check_grad`: runs under `jax.jit` and `jax.vmap`.

    Args:
      loss_fn, grad_fn, params, *args: as in `jgc.check_grad`.
      key: PRNG key for the directions (`jax.random.key(0)`).
      num: directions per checked leaf.
      eps: base step; the step along a direction on leaf k is eps·max(1, rms(θ_k)).
        `None` picks the default for the dtype and `method`.
      tol, method, chunk_size: as in `jgc.check_grad`.

    Returns:
      A `jgc.DirectionCheck` (a `GradCheck` whose `numeric` / `analytic` leaves hold the
      `num` directional derivatives of that leaf).

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> loss = lambda p: jnp.sum(jnp.sin(p["w"])) + jnp.sum(p["b"] ** 2)
      >>> wrong = lambda p: {"w": jnp.cos(p["w"]), "b": p["b"]}  # forgot the 2
      >>> p = {"w": jnp.linspace(0.0, 1.0, 100), "b": jnp.array([1.0, 2.0])}
      >>> res = jgc.check_directions(loss, wrong, p, key=jax.random.key(0))
      >>> bool(res.passed), bool(res.leaf_passed["w"]), bool(res.leaf_passed["b"])
      (False, True, False)
    """
    _check._validate(loss_fn, grad_fn, method, eps, tol, chunk_size)
    check_key(key)
    check_count("num", num)
    params = _check._prepare(params)
    _tree.layout(params)
    return _check._call(_Spec(loss_fn, grad_fn, method, chunk_size, int(num)), params, args, key=key, eps=eps, tol=tol)
