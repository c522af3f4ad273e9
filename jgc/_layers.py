"""Layer checks: a hand-written VJP or JVP rule of a function `f(*primals) -> pytree`.

`check_vjp` is `check_grad` on the scalar ⟨c, f(x)⟩ for a random cotangent c, whose
gradient is vjp(c): the same pipeline, so failures are localised to the input leaf.
`check_jvp` runs the engine on f itself (a vector-valued function of θ) along random
unit directions, each confined to one input leaf, and compares the finite-difference
output with jvp_fn's output entry by entry through the one verdict: a group is one
(output leaf, perturbed input leaf) pair. `vector_check` (jgc/_vector.py) is that
procedure for any vector-valued function of θ and rule; `check_hvp` (jgc/_hvp.py) is it on the gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _pipeline, _probes, _tree, _validate
from ._problem import OUTPUT, Problem
from ._result import JVPCheck, VJPCheck
from ._typing import PyTree, Tracer
from ._vector import random_like, validate_layer, vector_check

# ---------------------------------------------------------------- VJP


@dataclasses.dataclass(frozen=True)
class CotangentLoss:
    """⟨c, f(*primals)⟩: a scalar whose gradient with respect to the primals is vjp(c)."""

    f: _jit.Ref
    jgc_wrapper = True

    def __call__(self, primals, cotangent):
        out = _validate.trace("f", self.f(), *primals)
        prods = [
            jnp.vdot(c, o, precision=jax.lax.Precision.HIGHEST)  # jgc's own product: full precision whatever the flag
            for c, o in zip(jax.tree_util.tree_leaves(cotangent), jax.tree_util.tree_leaves(out), strict=True)
        ]
        return sum(prods[1:], prods[0])


@dataclasses.dataclass(frozen=True)
class VJPGrad:
    vjp_fn: _jit.Ref
    jgc_wrapper = True

    def __call__(self, primals, cotangent):
        grad = _validate.trace("vjp_fn", self.vjp_fn(), primals, cotangent)
        grad = tuple(grad) if isinstance(grad, list) else grad
        lay = _tree.layout(primals, name="primals")
        _validate.like_params(lay, grad, "vjp_fn", like="the primals (a tuple, one entry per primal)", noun="primal")
        return grad


def _vjp(f, vjp_fn, primals, args, options, eps, tol, key):
    out_lay = _output_layout(f, primals)
    if isinstance(key, Tracer) or _jit.is_traced(primals):
        cotangent = random_like(key, lay=out_lay)
    else:  # compiled once per output layout
        cotangent = _jit.program(("cotangent", out_lay), functools.partial(random_like, lay=out_lay))(key)
    loss, grad = CotangentLoss(_jit.Ref(f)), VJPGrad(_jit.Ref(vjp_fn))
    return _pipeline.run(loss, grad, primals, (cotangent,), options, eps, tol, None)


def _output_layout(f, primals) -> _tree.Layout:
    out = jax.eval_shape(lambda: _validate.trace("f", f, *primals))
    _validate.float_outputs(out, "f")
    return _tree.layout(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), out), name="the output of f")


def check_vjp(
    f: Callable[..., PyTree],
    vjp_fn: Callable[[tuple, PyTree], tuple],
    *primals,
    key: jax.Array,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> VJPCheck:
    """Check a hand-written backward rule (VJP) of a layer against finite differences.

    A random cotangent c (Gaussian, shaped like `f(*primals)`) turns the layer into the
    scalar ⟨c, f(*primals)⟩, whose gradient with respect to the primals is
    `vjp_fn(primals, c)`; that gradient is checked coordinate by coordinate exactly
    like `jgc.check_grad`. Leaf paths name the primal first: `[0]['W']` is leaf
    `['W']` of the first primal. Pure: runs under `jax.jit` and `jax.vmap` (vmap over
    keys to try several cotangents).

    Args:
      f: the layer, `f(*primals) -> pytree` of floating-point arrays.
      vjp_fn: `vjp_fn(primals, cotangent) -> tuple` with one entry per primal, each
        like that primal (None for leaves that are not floating point).
      *primals: the inputs of `f` (pytrees); floating-point leaves are checked.
      key: PRNG key for the cotangent.
      eps, tol, method, chunk_size: as in `jgc.check_grad`.

    Returns:
      A `jgc.GradCheck` (kind "check_vjp") whose leaves are the primals' leaves.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> f = lambda W, x: jnp.tanh(W @ x)
      >>> def vjp(primals, c):
      ...     W, x = primals
      ...     g = c * (1 - jnp.tanh(W @ x) ** 2)
      ...     return jnp.outer(g, x), W.T @ g
      >>> W, x = jnp.ones((2, 3)) / 4, jnp.arange(3.0)
      >>> bool(jgc.check_vjp(f, vjp, W, x, key=jax.random.key(0)).passed)
      True
    """
    params = validate_layer(f, "vjp_fn", vjp_fn, primals, key, method, eps, tol, chunk_size)
    options = _pipeline.Options(method, chunk_size, result=VJPCheck, loss_name="f", grad_name="vjp_fn")
    return _jit.check(_vjp, (f, vjp_fn), params, (), options, eps, tol, key)


# ---------------------------------------------------------------- JVP


def _jvp(f, jvp_fn, primals, args, options, eps, tol, key):
    make = lambda params, args: Problem(f, params, args, options.method, tol, kind=OUTPUT, name="f")  # noqa: E731
    lay = _tree.layout(primals, name="primals")
    num = options.num
    probes = _probes.leaf_blocks(lay.offsets, lay.sizes, num, 0.0)
    if _jit.is_traced(primals):
        probes = jax.tree_util.tree_map(jnp.asarray, probes)
    like = ("the output of f", "output")
    return vector_check(make, primals, (), probes, jvp_fn, "jvp_fn", like, num, lay.k, JVPCheck, options, eps, tol, key)


def check_jvp(
    f: Callable[..., PyTree],
    jvp_fn: Callable[[tuple, tuple], PyTree],
    *primals,
    key: jax.Array,
    num_tangents: int = 2,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> JVPCheck:
    """Check a hand-written forward-mode rule (JVP) of a layer against finite differences.

    For each floating-point input leaf, `num_tangents` random unit tangents t that move
    only that leaf are drawn; `(f(x + h t) − f(x − h t)) / 2h` (for "central") is
    compared with `jvp_fn(primals, tangents)` output leaf by output leaf, through the one
    verdict (noise from f's measured rounding, kinks, three outcomes). A row of the
    report is one pair `out['y'] ← [0]['W']`: output leaf `['y']` when the first
    primal's leaf `['W']` was perturbed; its shape is (tangent, *output shape).
    Cost: 2 · num_tangents evaluations of `f` per input leaf (central), plus the noise probe.

    Args:
      f: the layer, `f(*primals) -> pytree` of floating-point arrays.
      jvp_fn: `jvp_fn(primals, tangents) -> pytree` like `f`'s output; `tangents` is
        a tuple like the primals (zeros on non-float array leaves; non-array
        leaves, such as an equinox Module's functions, kept as they are).
      *primals: the inputs of `f`.
      key: PRNG key for the tangents.
      num_tangents: random tangents per input leaf.
      eps, tol, method, chunk_size: as in `jgc.check_grad`; a tangent has unit norm on its
        leaf and is stepped by eps·max(1, rms of the leaf).

    Returns:
      A `jgc.GradCheck` (kind "check_jvp") with one leaf per (output leaf, perturbed input leaf) pair.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> f = lambda x: jnp.sin(x)
      >>> jvp = lambda primals, tangents: jnp.cos(primals[0]) * tangents[0]
      >>> bool(jgc.check_jvp(f, jvp, jnp.arange(3.0), key=jax.random.key(0)).passed)
      True
    """
    params = validate_layer(f, "jvp_fn", jvp_fn, primals, key, method, eps, tol, chunk_size)
    _validate.count("num_tangents", num_tangents)
    options = dataclasses.replace(_pipeline.Options(method, chunk_size), num=int(num_tangents))
    return _jit.check(_jvp, (f, jvp_fn), params, (), options, eps, tol, key)
