"""Layer checks: a hand-written VJP or JVP rule of a function `f(*primals) -> pytree`.

`check_vjp` is `check_grad` on the scalar ⟨c, f(x)⟩ for a random cotangent c, whose
gradient is vjp(c): the same core, so failures are localised to the input leaf.
`check_jvp` runs the engine on f itself (a vector-valued function of θ) along random
tangents, each confined to one input leaf, and compares the finite-difference output
with jvp_fn's output leaf by leaf: a row of its report is one (output leaf, perturbed
input leaf) pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _engine, _probes, _stencils, _tree
from ._result import GradCheck
from ._typing import PyTree

# ---------------------------------------------------------------- shared


def _validate(f, rule_name, rule, primals, key, method, eps, tol, chunk_size) -> tuple:
    _check._check_callable("f", f)
    _check._check_callable(rule_name, rule)
    _stencils.get(method)
    _check._check_positive("eps", eps)
    _check._check_positive("tol", tol)
    _check._check_chunk_size(chunk_size)
    if not primals:
        raise ValueError(
            f"no primals given: pass the inputs of f after {rule_name}, e.g. jgc.check_vjp(f, {rule_name}, x, key=key)."
        )
    _check_key(key)
    params = _check._prepare(tuple(primals))
    _tree.layout(params)  # fail before tracing when no primal is floating point
    return params


def _check_key(key) -> None:
    if not _tree.is_array(key):
        raise TypeError(f"key must be a PRNG key (jax.random.key(0)); received {type(key).__name__}: {key!r}.")


def _output_layout(f, params) -> _tree.Layout:
    out = jax.eval_shape(lambda: f(*params))  # params may hold non-array leaves
    keyed = jax.tree_util.tree_flatten_with_path(out)[0]
    for path, leaf in keyed:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"f output{jax.tree_util.keystr(path)} is {getattr(dtype, 'name', type(leaf).__name__)}; "
                "expected floating-point arrays only (return auxiliary outputs from another function)."
            )
    return _tree.layout(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), out))  # layout reads shapes only


# ---------------------------------------------------------------- VJP


@dataclasses.dataclass(frozen=True)
class _CotangentLoss:
    """⟨c, f(*primals)⟩: a scalar whose gradient with respect to the primals is vjp(c)."""

    f: Callable

    def __call__(self, primals, cotangent):
        out = self.f(*primals)
        prods = [
            jnp.vdot(c, o) for c, o in zip(jax.tree_util.tree_leaves(cotangent), jax.tree_util.tree_leaves(out), strict=True)
        ]
        return sum(prods[1:], prods[0])


@dataclasses.dataclass(frozen=True)
class _VJPGrad:
    vjp_fn: Callable

    def __call__(self, primals, cotangent):
        grad = self.vjp_fn(primals, cotangent)
        grad = tuple(grad) if isinstance(grad, list) else grad
        _check._check_grad_tree(_tree.layout(primals), grad, name="vjp_fn", like="the primals (a tuple, one entry per primal)")
        return grad


def _random_like(key, out_lay: _tree.Layout) -> PyTree:
    keys = jax.random.split(key, len(out_lay.shapes))
    leaves = [jax.random.normal(k, s, d) for k, s, d in zip(keys, out_lay.shapes, out_lay.dtypes, strict=True)]
    return jax.tree_util.tree_unflatten(out_lay.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _VJPSpec:
    f: Callable
    vjp_fn: Callable
    method: str
    chunk_size: int | None

    def __call__(self, params, args, eps, tol):
        (key,) = args
        cotangent = _random_like(key, _output_layout(self.f, params))
        spec = _check._Spec(_CotangentLoss(self.f), _VJPGrad(self.vjp_fn), self.method, self.chunk_size)
        return dataclasses.replace(_check._check(spec, params, (cotangent,), eps, tol), check="check_vjp")


def check_vjp(
    f: Callable[..., PyTree],
    vjp_fn: Callable[[tuple, PyTree], tuple],
    *primals,
    key: jax.Array,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> GradCheck:
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
      A `jgc.GradCheck` whose leaves are the primals' leaves.

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
    params = _validate(f, "vjp_fn", vjp_fn, primals, key, method, eps, tol, chunk_size)
    return _check._call(_VJPSpec(f, vjp_fn, method, chunk_size), params, (key,), eps=eps, tol=tol)


# ---------------------------------------------------------------- JVP


@dataclasses.dataclass(frozen=True)
class _JVPSpec:
    f: Callable
    jvp_fn: Callable
    method: str
    chunk_size: int | None
    num_tangents: int

    def __call__(self, params, args, eps, tol):
        (key,) = args
        lay, out_lay = _tree.layout(params), _output_layout(self.f, params)
        stencil = _stencils.get(self.method)
        theta = _tree.ravel(lay, params)
        if eps is None:
            eps = _stencils.default_eps(min(lay.low_dtype, out_lay.low_dtype, key=lambda d: d.itemsize), self.method)
        num_leaves, per_leaf = len(lay.sizes), self.num_tangents
        num_probes = num_leaves * per_leaf
        probe = _probes.leaf_directions(theta, eps, _tree.segment_ids(lay), num_leaves, per_leaf, key)

        def fun(theta):
            return _tree.ravel(out_lay, self.f(*_tree.unravel(lay, theta, params)))

        numeric, _, num_evals = _engine.directional_derivatives(fun, theta, probe, num_probes, stencil, self.chunk_size)

        def rule(i):
            d, _ = probe(i)
            out = self.jvp_fn(tuple(params), _tangents(lay, d, params))
            _check._check_grad_tree(out_lay, out, name="jvp_fn", like="the output of f")
            return _tree.ravel(out_lay, out)

        batch = self.chunk_size or _engine.default_chunk_size(theta.size, num_probes, stencil)
        analytic = jax.lax.map(rule, jnp.arange(num_probes), batch_size=batch).astype(numeric.dtype)
        pairs = _pair_layout(lay, out_lay, per_leaf)
        return _check._compare(
            pairs,
            _by_pair(numeric, lay, out_lay, per_leaf),
            _by_pair(analytic, lay, out_lay, per_leaf),
            eps,
            tol,
            num_evals,
            self.method,
            check="check_jvp",
        )


def _tangents(lay: _tree.Layout, d: jax.Array, params) -> PyTree:
    """Tangents like the primals (same pytree structure): d on checked leaves, zeros on
    other arrays, and non-array leaves (an equinox Module's functions) kept as they are."""
    leaves = [jnp.zeros(np.shape(x), x.dtype) if _tree.is_array(x) else x for x in jax.tree_util.tree_leaves(params)]
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes, strict=True):
        leaves[i] = d[o : o + s].reshape(lay.shapes[i]).astype(lay.dtypes[i])
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def _pair_layout(lay: _tree.Layout, out_lay: _tree.Layout, per_leaf: int) -> _tree.Layout:
    """One leaf per (perturbed input leaf, output leaf), shaped (tangent, *output shape)."""
    paths, shapes, dtypes = [], [], []
    for i in lay.checked_index:
        for o in out_lay.checked_index:
            paths.append(f"out{out_lay.paths[o]} ← {lay.paths[i]}")
            shapes.append((per_leaf, *out_lay.shapes[o]))
            dtypes.append(min(jnp.dtype(lay.dtypes[i]), jnp.dtype(out_lay.dtypes[o]), key=lambda d: d.itemsize).name)
    treedef = jax.tree_util.tree_structure([0] * len(paths))
    return _tree.Layout(treedef, tuple(paths), tuple(shapes), tuple(dtypes), (True,) * len(paths))


def _by_pair(values: jax.Array, lay: _tree.Layout, out_lay: _tree.Layout, per_leaf: int) -> jax.Array:
    """(probes, outputs) → one flat vector ordered like `_pair_layout`."""
    values = values.reshape(len(lay.sizes), per_leaf, out_lay.n)
    blocks = [
        values[i, :, o : o + s].reshape(-1)
        for i in range(len(lay.sizes))
        for o, s in zip(out_lay.offsets, out_lay.sizes, strict=True)
    ]
    return jnp.concatenate(blocks)


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
) -> GradCheck:
    """Check a hand-written forward-mode rule (JVP) of a layer against finite differences.

    For each floating-point input leaf, `num_tangents` random tangents t that move
    only that leaf are drawn; `(f(x + h t) − f(x − h t)) / 2h` (for "central") is
    compared with `jvp_fn(primals, tangents)` output leaf by output leaf. A row of
    the report is one pair `out['y'] ← [0]['W']`: output leaf `['y']` when the
    first primal's leaf `['W']` was perturbed; its shape is (tangent, *output shape).
    Cost: 2 · num_tangents evaluations of `f` per input leaf (central).

    Args:
      f: the layer, `f(*primals) -> pytree` of floating-point arrays.
      jvp_fn: `jvp_fn(primals, tangents) -> pytree` like `f`'s output; `tangents` is
        a tuple like the primals (zeros on non-float array leaves; non-array
        leaves, such as an equinox Module's functions, kept as they are).
      *primals: the inputs of `f`.
      key: PRNG key for the tangents.
      num_tangents: random tangents per input leaf.
      eps, tol, method, chunk_size: as in `jgc.check_grad`; a tangent is scaled to
        max |t_j| = 1 and stepped by eps·max(1, max |x_j|) over its leaf.

    Returns:
      A `jgc.GradCheck` with one leaf per (output leaf, perturbed input leaf) pair.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> f = lambda x: jnp.sin(x)
      >>> jvp = lambda primals, tangents: jnp.cos(primals[0]) * tangents[0]
      >>> bool(jgc.check_jvp(f, jvp, jnp.arange(3.0), key=jax.random.key(0)).passed)
      True
    """
    params = _validate(f, "jvp_fn", jvp_fn, primals, key, method, eps, tol, chunk_size)
    if isinstance(num_tangents, bool) or not isinstance(num_tangents, (int, np.integer)) or num_tangents < 1:
        raise ValueError(f"num_tangents must be a positive int; received {num_tangents!r}.")
    return _check._call(_JVPSpec(f, jvp_fn, method, chunk_size, int(num_tangents)), params, (key,), eps=eps, tol=tol)
