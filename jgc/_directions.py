"""`jgc.check_directions`: random directions, each supported on one leaf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from . import _host, _jit, _pipeline, _tree, _validate
from ._result import DirectionCheck
from ._typing import PyTree


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
    compared with ⟨grad_fn, v⟩, through the same verdict as `jgc.check_grad` (noise,
    kinks, three outcomes). Cost: `num · (number of leaves) · 2` loss evaluations for
    "central" (plus the noise probe and the doubled step where it matters), whatever the
    number of coordinates. Every squared norm of the full check is estimated without bias
    from the directions (E⟨x, v⟩² = ‖x‖²/s on a leaf of s coordinates), so `rel_error` and
    `leaf_rel_error` estimate the full check's values; see docs/scale.md. Pure, like
    `check_grad`: runs under `jax.jit` and `jax.vmap`.

    Args:
      loss_fn, grad_fn, params, *args: as in `jgc.check_grad`.
      key: PRNG key for the directions (`jax.random.key(0)`).
      num: directions per checked leaf.
      eps: base step; the step along a direction on leaf k is eps·max(1, rms(θ_k)).
        `None` picks the default for the loss's precision and `method`.
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
      >>> bool(res.failed), bool(res.leaf_passed["w"]), bool(res.leaf_failed["b"])
      (True, True, True)
    """
    _validate.options(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _validate.key(key, where="check_directions")
    _validate.count("num", num)
    params = _validate.prepare(params)
    _tree.layout(params)
    options = dataclasses.replace(_pipeline.Options(method, chunk_size), mode=_pipeline.DIRECTIONS, num=int(num))

    def go(loss, on_host):
        opts = _host.options(options, False) if on_host else options
        return _jit.check(_pipeline.run, (loss, grad_fn), params, args, opts, eps, tol, key)

    return _host.run(go, loss_fn, params, args, False, autograd="grad_fn=None" if grad_fn is None else "")
