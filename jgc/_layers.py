"""Layer checks: a hand-written VJP or JVP rule of a function `f(*primals) -> pytree`.

`check_vjp` is `check_grad` on the scalar ⟨c, f(x)⟩ for a random cotangent c, whose
gradient is vjp(c): the same pipeline, so failures are localised to the input leaf.
`check_jvp` runs the engine on f itself (a vector-valued function of θ) along random
unit directions, each confined to one input leaf, and compares the finite-difference
output with jvp_fn's output entry by entry through the one verdict: a group is one
(output leaf, perturbed input leaf) pair. `vector_check` is that procedure for any
vector-valued function of θ and rule; `check_hvp` (jgc/_hvp.py) is it on the gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _jit, _pipeline, _probes, _tree, _validate
from ._engine import Engine
from ._problem import OUTPUT, Problem
from ._result import JVPCheck, VJPCheck
from ._typing import PyTree, Tracer

# ---------------------------------------------------------------- shared


def validate_layer(f, rule_name, rule, primals, key, method, eps, tol, chunk_size, key_name="key") -> tuple:
    _validate.callable_("f", f)
    _validate.callable_(rule_name, rule)
    _check.validate(f, None, method, eps, tol, chunk_size, grad_name=None)
    if not primals:
        raise ValueError(
            f"no primals given: pass the inputs of f after {rule_name}, e.g. jgc.check_vjp(f, {rule_name}, x, key=key)."
        )
    _validate.key(key, key_name)
    params = _check.prepare(tuple(primals))
    _tree.layout(params, name="primals")  # fail before tracing when no primal is floating point
    return params


def tangents(lay: _tree.Layout, d: jax.Array, params) -> PyTree:
    """Tangents like the primals (same pytree structure): d on checked leaves, zeros on
    other arrays, and non-array leaves (an equinox Module's functions) kept as they are."""
    leaves = [
        jnp.zeros(np.shape(x), x.dtype) if _tree.is_array(x) and not _tree.is_key(x) else x
        for x in lay.treedef.flatten_up_to(params)
    ]
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes, strict=True):
        leaves[i] = d[o : o + s].reshape(lay.shapes[i]).astype(lay.dtypes[i])
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def random_like(key, *, lay: _tree.Layout) -> PyTree:
    """Gaussian arrays shaped like the layout's leaves (a cotangent)."""
    keys = jax.random.split(key, len(lay.shapes))
    leaves = [jax.random.normal(k, s, d) for k, s, d in zip(keys, lay.shapes, lay.dtypes, strict=True)]
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class Rule:
    """The analytic side of a vector check: rule(direction of each probe), raveled like the output."""

    ref: _jit.Ref
    name: str
    like: str
    noun: str
    lay: _tree.Layout
    out_lay: _tree.Layout
    static: tuple
    primals_first: bool  # JVP: rule(primals, tangents); HVP: rule(params, v, *args)

    def __call__(self, theta, dynamic, key, probes):
        params, args = _jit.combine(dynamic, self.static)
        params = _tree.unravel(self.lay, theta, params)

        def one(i):
            d, _ = _probes.direction(probes, i, theta, key)
            t = tangents(self.lay, d, params)
            if self.primals_first:
                out = _validate.trace(self.name, self.ref(), tuple(params), t)
            else:
                out = _validate.trace(self.name, self.ref(), params, t, *args)
            _validate.like_params(self.out_lay, out, self.name, like=self.like, noun=self.noun)
            return _tree.ravel(self.out_lay, out).astype(theta.dtype)

        return jax.lax.map(one, jnp.arange(len(probes)))


def pair_layout(lay: _tree.Layout, out_lay: _tree.Layout, per_group: int, probe_groups: int, out_name: str):
    """The groups of a vector check: one per (probe group, output leaf), shaped (probe, *output shape).

    With one probe group the layout keeps the output's tree (so `numeric["W"]` works), each
    checked leaf gaining a leading probe axis. Returns (the layout, the flat (probe, output)
    index of each entry in group order).
    """
    out_n = out_lay.n
    order = []
    for g in range(probe_groups):
        rows = np.arange(g * per_group, (g + 1) * per_group)
        for off, size in zip(out_lay.offsets, out_lay.sizes, strict=True):
            order.append((rows[:, None] * out_n + off + np.arange(size)[None, :]).reshape(-1))
    order = np.concatenate(order) if order else np.zeros(0, int)
    if probe_groups == 1:
        shapes = tuple((per_group, *s) if c else s for s, c in zip(out_lay.shapes, out_lay.checked, strict=True))
        return dataclasses.replace(out_lay, shapes=shapes), order
    paths, shapes, dtypes = [], [], []
    for g in range(probe_groups):
        for o in out_lay.checked_index:
            paths.append(f"{out_name}{out_lay.paths[o]} ← {lay.checked_paths[g]}")
            shapes.append((per_group, *out_lay.shapes[o]))
            dtypes.append(min(jnp.dtype(lay.low_dtype), jnp.dtype(out_lay.dtypes[o]), key=lambda d: d.itemsize).name)
    treedef = jax.tree_util.tree_structure([0] * len(paths))
    return _tree.Layout(treedef, tuple(paths), tuple(shapes), tuple(dtypes), (True,) * len(paths)), order


def vector_check(
    make,
    params,
    args,
    probes,
    rule,
    rule_name: str,
    like: tuple,
    per_group: int,
    probe_groups: int,
    result,
    options,
    eps,
    tol,
    key,
):
    """The pipeline on a vector-valued function of θ along `probes`, against `rule`, per
    (group, output leaf). `make(params, args) -> Problem` sets up the function of θ (again in
    float64 for a float64 re-check); the rule's values along every probe are its analytic side."""
    like_name, noun = like

    def build(params, args):
        p = make(params, args)
        spec = Rule(_jit.Ref(rule), rule_name, like_name, noun, p.lay, p.out_lay, p.static, result is JVPCheck)
        pr = probes if p.traced else jax.tree_util.tree_map(np.asarray, probes)
        return p, _pipeline.Side(None, p.call(("rule", spec), spec, key, pr))  # directions do not depend on the step

    def engine_of(p, side, n):
        return Engine(p, probes.kind, n, options.chunk_size, False, key)

    problem, side = build(params, args)
    assert problem.out_lay is not None
    layout, order = pair_layout(problem.lay, problem.out_lay, per_group, probe_groups, "out")
    grouping = _pipeline.Grouping(layout.segments, layout.k, layout.sizes, order, problem.out_lay.n)
    engine, state, evals = _pipeline.execute(problem, side, probes, grouping, engine_of, build, options, eps, tol, key)
    return _pipeline.result(result, problem, engine, state, grouping, layout, evals)


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
