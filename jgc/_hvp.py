"""`jgc.check_hvp`: a hand-written Hessian-vector product, as the JVP check of the gradient.

The gradient g(θ) is a vector-valued function of θ; its JVP along v is H·v. So
`check_hvp` is `vector_check` (jgc/_vector.py) on g — `grad_fn`, or `jax.grad(loss_fn)`
— along every coordinate (the full Hessian, column by column) or a few random unit
directions, against `hvp_fn`, compared leaf by leaf of H·v.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _pipeline, _probes, _tree, _validate, _vector
from ._problem import AUTOGRAD, GRADIENT, Problem
from ._result import HVPCheck
from ._typing import PyTree


def _hvp(loss_fn, hvp_fn, grad_fn, params, args, options, eps, tol, key):
    kind, fn, name = (AUTOGRAD, loss_fn, "loss_fn") if grad_fn is None else (GRADIENT, grad_fn, "grad_fn")
    make = lambda params, args: Problem(fn, params, args, options.method, tol, kind=kind, name=name)  # noqa: E731
    lay = _tree.layout(params)
    traced = _jit.is_traced((params, args))
    xp = jnp if traced else np
    if options.num == 0:  # every coordinate: the whole Hessian
        probes = _probes.Probes(xp.arange(lay.n, dtype=np.int32), xp.zeros(lay.n, lay.dtype))
    else:
        probes = _probes.blocks(np.zeros(options.num), np.full(options.num, lay.n), 0.0)
        if traced:
            probes = jax.tree_util.tree_map(jnp.asarray, probes)
    like = ("params", "parameter")
    return _vector.vector_check(
        make, params, args, probes, hvp_fn, "hvp_fn", like, len(probes), 1, HVPCheck, options, eps, tol, key
    )


def check_hvp(
    loss_fn: Callable[..., jax.Array],
    hvp_fn: Callable[..., PyTree],
    params: PyTree,
    *args,
    key: jax.Array | None = None,
    grad_fn: Callable[..., PyTree] | None = None,
    num_vectors: int = 4,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> HVPCheck:
    """Check a hand-written Hessian-vector product against finite differences of the gradient.

    With `key`, `num_vectors` random unit vectors v are drawn; with `key=None` every
    coordinate vector e_j is used, which checks the whole Hessian column by column (n²
    numbers: small models only). For each v, `(g(θ + h v) − g(θ − h v)) / 2h` (for
    "central"), with g the gradient, is compared with `hvp_fn(params, v, *args)` through
    the one verdict. Each leaf of the result has a leading probe axis:
    `numeric[...]['W'][k]` is the `['W']` block of H·v_k, so a failure names the leaf of
    the Hessian-vector product that is wrong (and, with `key=None`, the worst index
    (j, ...) says which column e_j).

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`; used for the gradient when
        `grad_fn` is None.
      hvp_fn: `hvp_fn(params, v, *args) -> pytree` like `params`; `v` has the
        structure of `params` (zeros on non-float array leaves; non-array leaves
        kept as they are).
      params: pytree of parameters; floating-point leaves are checked.
      *args: passed unchanged to `loss_fn`, `grad_fn` and `hvp_fn`.
      key: PRNG key for random vectors; `None` checks every coordinate.
      grad_fn: `grad_fn(params, *args) -> pytree` like `params`; `None` uses
        `jax.grad(loss_fn)`.
      num_vectors: how many random vectors (ignored when `key` is None).
      eps, tol, method, chunk_size: as in `jgc.check_grad` (for random vectors the
        step is eps·max(1, rms(θ))).

    Returns:
      A `jgc.GradCheck` (kind "check_hvp"); `num_evals` counts gradient evaluations.

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> loss = lambda p: jnp.sum(p["w"] ** 3)
      >>> hvp = lambda p, v: {"w": 6 * p["w"] * v["w"]}
      >>> bool(jgc.check_hvp(loss, hvp, {"w": jnp.array([0.5, -1.0])}).passed)
      True
    """
    _validate.options(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _validate.callable_("hvp_fn", hvp_fn)
    if key is not None:
        _validate.key(key, where="check_hvp")
        _validate.count("num_vectors", num_vectors)
    params = _validate.prepare(params)
    _tree.layout(params)
    options = dataclasses.replace(_pipeline.Options(method, chunk_size), num=0 if key is None else int(num_vectors))
    return _jit.check(_hvp, (loss_fn, hvp_fn, grad_fn), params, args, options, eps, tol, key)
