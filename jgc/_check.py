"""The public checks: validate → flatten → probes → engine → compare → result."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _engine, _partial, _probes, _stencils, _tree
from ._result import GradCheck, GradCheckError
from ._typing import PyTree

# ---------------------------------------------------------------- validation


def _check_callable(name: str, fn, allow_none: bool = False) -> None:
    if fn is None and allow_none:
        return
    if not callable(fn):
        expected = "a callable or None" if allow_none else "a callable"
        raise TypeError(f"{name} must be {expected}; received {type(fn).__name__}: {fn!r}.")


def _check_positive(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a positive float or None; received {type(value).__name__}: {value!r}.")
    if isinstance(value, jax.core.Tracer):
        return  # a traced value cannot be inspected; the user vouches for it
    v = np.asarray(value)
    if v.shape != () or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite scalar or None; received {value!r}.")


def _check_chunk_size(chunk_size) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None; received {chunk_size!r}.")


def _check_loss_output(out) -> None:
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"loss_fn must return a scalar array; received {type(out).__name__}: {out!r}.")
    if shape != ():
        raise ValueError(
            f"loss_fn must return a scalar; received an array of shape {shape} ({dtype}). "
            "Reduce it, e.g. with jnp.mean or jnp.sum."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"loss_fn must return a floating-point scalar; received dtype {jnp.dtype(dtype).name}.")


def _check_grad_tree(lay: _tree.Layout, grad: PyTree) -> None:
    """The gradient must have the params' structure, and their shapes and dtypes on checked leaves."""
    is_none = lambda x: x is None  # noqa: E731  (None is allowed for unchecked leaves)
    keyed, treedef = jax.tree_util.tree_flatten_with_path(grad, is_leaf=is_none)
    paths = [jax.tree_util.keystr(k) for k, _ in keyed]
    if paths != list(lay.paths):
        missing = [p for p in lay.paths if p not in paths]
        extra = [p for p in paths if p not in lay.paths]
        parts = []
        if missing:
            parts.append(f"missing leaves {', '.join(missing)}")
        if extra:
            parts.append(f"extra leaves {', '.join(extra)}")
        if not parts:
            parts.append(f"leaves in another order: {paths}")
        raise ValueError(
            f"grad_fn returned a pytree whose structure differs from params: {'; '.join(parts)}. "
            f"Expected the structure of params: {lay.treedef}."
        )
    if treedef != lay.treedef:
        raise ValueError(f"grad_fn returned a pytree with other containers than params: received {treedef}, expected {lay.treedef}.")
    for i in lay.checked_index:
        g = keyed[i][1]
        path, shape, dtype = lay.paths[i], lay.shapes[i], lay.dtypes[i]
        if g is None or not hasattr(g, "shape"):
            raise TypeError(f"{path}: gradient is {type(g).__name__}; expected an array of shape {shape} and dtype {dtype}.")
        if tuple(g.shape) != shape:
            raise ValueError(f"{path}: gradient shape {tuple(g.shape)} != parameter shape {shape}.")
        if jnp.dtype(g.dtype).name != dtype:
            raise TypeError(f"{path}: gradient dtype {jnp.dtype(g.dtype).name} != parameter dtype {dtype}.")


# ---------------------------------------------------------------- jit plumbing


@dataclasses.dataclass(frozen=True)
class _Static:
    """A non-array leaf of params or args, carried through jit as a static value."""

    value: object

    def _key(self):
        try:
            return (type(self.value), hash(self.value))
        except TypeError:
            return (type(self.value), id(self.value))

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, _Static) and (self.value is other.value or self._key() == other._key() and self.value == other.value)


def _partition(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [leaf if _tree.is_array(leaf) else None for leaf in leaves]
    static = tuple(None if _tree.is_array(leaf) else _Static(leaf) for leaf in leaves)
    return dynamic, (treedef, static)


def _combine(dynamic, static):
    treedef, statics = static
    leaves = [d if s is None else s.value for d, s in zip(dynamic, statics)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jitted(fn, static, dynamic, options):
    params, args = _combine(dynamic, static)
    return fn(params, args, **options)


def _call(fn, params, args, **options):
    """Run `fn(params, args, **options)` under `jax.jit`, with non-array leaves static."""
    dynamic, static = _partition((params, args))
    return _jitted(fn, static, dynamic, options)


def _prepare(params):
    """Python floats in params become arrays (so they are checked); nothing is mutated."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x) if isinstance(x, float) else x, params)


# ---------------------------------------------------------------- core

# Whether checks evaluate per leaf only the part of the loss downstream of it (jgc/_partial.py).
PARTIAL_EVAL_DEFAULT = False


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Everything static about a check: hashable, so jit caches on it."""

    loss_fn: Callable
    grad_fn: Callable | None
    method: str
    chunk_size: int | None
    partial_eval: bool = False

    def __call__(self, params, args, eps, tol):
        return _check(self, params, args, eps, tol)


def _loss_of_theta(loss_fn, lay, params, args):
    def loss(theta):
        return loss_fn(_tree.unravel(lay, theta, params), *args)

    return loss


def _numeric_flat(spec: _Spec, lay, params, args, eps):
    """θ, the finite-difference gradient along every coordinate, and the evaluation count."""
    _check_loss_output(jax.eval_shape(lambda p: spec.loss_fn(p, *args), params))
    stencil = _stencils.get(spec.method)
    theta = _tree.ravel(lay, params)
    if eps is None:
        eps = _stencils.default_eps(lay.low_dtype, spec.method)
    loss = _loss_of_theta(spec.loss_fn, lay, params, args)
    if spec.partial_eval:  # per leaf: only the equations downstream of it (jgc/_partial.py)
        numeric, num_evals = _partial.numeric_flat(spec.loss_fn, lay, params, args, theta, eps, stencil, spec.chunk_size, loss)
        return theta, numeric, num_evals, jnp.asarray(eps, theta.dtype)
    probe = _probes.coordinates(theta, eps)
    numeric, _, num_evals = _engine.directional_derivatives(loss, theta, probe, lay.n, stencil, spec.chunk_size)
    return theta, numeric, num_evals, jnp.asarray(eps, theta.dtype)


def _analytic_flat(spec: _Spec, lay, params, args, theta):
    if spec.grad_fn is None:
        return jax.grad(_loss_of_theta(spec.loss_fn, lay, params, args))(theta)
    grad = spec.grad_fn(params, *args)
    _check_grad_tree(lay, grad)
    return _tree.ravel(lay, grad)


def _rel(num_err, norm_a, norm_b):
    denom = norm_a + norm_b
    return jnp.where(denom == 0, jnp.zeros_like(num_err), num_err / jnp.where(denom == 0, 1, denom))


def _check(spec: _Spec, params, args, eps, tol) -> GradCheck:
    lay = _tree.layout(params)
    theta, numeric, num_evals, eps = _numeric_flat(spec, lay, params, args, eps)
    analytic = _analytic_flat(spec, lay, params, args, theta)
    if tol is None:
        tol = _stencils.default_tol(lay.low_dtype, spec.method)
    tol = jnp.asarray(tol, theta.dtype)

    seg = _tree.segment_ids(lay)
    k = len(lay.sizes)
    sq = lambda x: jax.ops.segment_sum(x * x, seg, num_segments=k)  # noqa: E731
    leaf_err, leaf_num, leaf_ana = sq(numeric - analytic), sq(numeric), sq(analytic)
    err, norm_num, norm_ana = jnp.sqrt(leaf_err.sum()), jnp.sqrt(leaf_num.sum()), jnp.sqrt(leaf_ana.sum())
    rel_error = _rel(err, norm_num, norm_ana)
    leaf_rel = _rel(jnp.sqrt(leaf_err), jnp.sqrt(leaf_num), jnp.sqrt(leaf_ana))
    # A leaf also passes when its RMS discrepancy is small against the whole gradient's RMS scale.
    sizes = jnp.asarray(lay.sizes, theta.dtype)
    scale = (norm_num + norm_ana) / math.sqrt(lay.n)
    leaf_ok = (leaf_rel <= tol) | (jnp.sqrt(leaf_err / sizes) <= tol * scale)
    finite = jnp.all(jnp.isfinite(numeric)) & jnp.all(jnp.isfinite(analytic))
    passed = (rel_error <= tol) & jnp.all(leaf_ok) & finite
    return GradCheck(
        rel_error=rel_error,
        passed=passed,
        tol=tol,
        eps=eps,
        numeric=_tree.unravel_full(lay, numeric),
        analytic=_tree.unravel_full(lay, analytic),
        leaf_rel_error=_tree.per_leaf(lay, leaf_rel),
        leaf_passed=_tree.per_leaf(lay, leaf_ok, fill=True),
        num_evals=jnp.asarray(num_evals, jnp.int32),
        method=spec.method,
        layout=lay,
        leaf_eval=_partial.plan(spec.loss_fn, lay, params, args, _stencils.get(spec.method)) if spec.partial_eval else (),
    )


def _check_partial_eval(partial_eval) -> None:
    if not isinstance(partial_eval, bool):
        raise TypeError(f"partial_eval must be True or False; received {type(partial_eval).__name__}: {partial_eval!r}.")


def _validate(loss_fn, grad_fn, method, eps, tol, chunk_size, check_grad_fn=True):
    _check_callable("loss_fn", loss_fn)
    if check_grad_fn:
        _check_callable("grad_fn", grad_fn, allow_none=True)
    _stencils.get(method)
    _check_positive("eps", eps)
    _check_positive("tol", tol)
    _check_chunk_size(chunk_size)


# ---------------------------------------------------------------- public


def check_grad(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    params: PyTree,
    *args,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
    partial_eval: bool = PARTIAL_EVAL_DEFAULT,
) -> GradCheck:
    """Check a hand-written gradient against finite differences, coordinate by coordinate.

    Every floating-point coordinate θ_i of `params` is perturbed on its own and
    `(J(θ + h_i e_i) − J(θ − h_i e_i)) / 2h_i` (for `method="central"`) is compared
    with `grad_fn`. The loss evaluations are vmapped in chunks and jit-compiled;
    the call is pure and can itself run under `jax.jit` and `jax.vmap`.

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`. The whole loss, regularization
        included; randomness (dropout) must come from a key in `args`.
      grad_fn: `grad_fn(params, *args) -> pytree` like `params` (same structure,
        shapes and dtypes); `None` checks `jax.grad(loss_fn)`.
      params: pytree of parameters. Floating-point leaves are checked; integer,
        boolean and non-array leaves are passed through and listed as not checked.
      *args: passed unchanged to `loss_fn` and `grad_fn`; not differentiated.
      eps: base step; coordinate i is stepped by `eps·max(1, |θ_i|)`. `None` picks
        the default for the parameters' dtype and `method`.
      tol: threshold on the relative error; `None` picks the default for the dtype.
      method: finite-difference stencil, one of "central", "forward", "five_point".
      chunk_size: probes evaluated per vmapped batch; `None` bounds memory to a
        few tens of MB of perturbed parameters.
      partial_eval: evaluate, for the probes of each leaf, only the part of the loss
        downstream of that leaf (the rest once); same numbers up to rounding,
        `result.leaf_eval` says which leaves took which path (docs/partial_eval.md).

    Returns:
      A `jgc.GradCheck`. Call `.report()` (or `print` it) for the table and
      `.worst(k)` for the worst coordinates.

    Raises:
      TypeError, ValueError: on malformed input (the message names the leaf).

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] * x))
      >>> grad = lambda p, x: {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2)}
      >>> res = jgc.check_grad(loss, grad, {"w": jnp.array([0.3, -1.2])}, jnp.array([2.0, 0.5]))
      >>> bool(res.passed)
      True
    """
    _validate(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _check_partial_eval(partial_eval)
    params = _prepare(params)
    _tree.layout(params)  # fail here, before tracing, on an empty or unusable tree
    return _call(_Spec(loss_fn, grad_fn, method, chunk_size, partial_eval), params, args, eps=eps, tol=tol)


@dataclasses.dataclass(frozen=True)
class _NumericSpec(_Spec):
    def __call__(self, params, args, eps, tol):
        lay = _tree.layout(params)
        _, numeric, _, _ = _numeric_flat(self, lay, params, args, eps)
        return _tree.unravel_full(lay, numeric)


def numeric_grad(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    eps: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
    partial_eval: bool = PARTIAL_EVAL_DEFAULT,
) -> PyTree:
    """The finite-difference gradient of `loss_fn` at `params`, shaped like `params`.

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`.
      params: pytree of parameters; leaves that are not floating point come back NaN.
      *args: passed unchanged to `loss_fn`.
      eps, method, chunk_size, partial_eval: as in `jgc.check_grad`.

    Returns:
      A pytree like `params`, every leaf in the dtype of the raveled parameters.

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> g = jgc.numeric_grad(lambda p: jnp.sum(p ** 3), jnp.array([1.0, 2.0]))
      >>> [round(float(v), 2) for v in g]
      [3.0, 12.0]
    """
    _validate(loss_fn, None, method, eps, None, chunk_size, check_grad_fn=False)
    _check_partial_eval(partial_eval)
    params = _prepare(params)
    _tree.layout(params)
    return _call(_NumericSpec(loss_fn, None, method, chunk_size, partial_eval), params, args, eps=eps, tol=None)


def relative_error(a: PyTree, b: PyTree) -> jax.Array:
    """‖a − b‖₂ / (‖a‖₂ + ‖b‖₂) over all leaves of two pytrees of the same structure (0 if both are 0).

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> float(jgc.relative_error({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 0.0])}))
      0.0
    """
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        raise ValueError(f"relative_error needs two pytrees of the same structure; received {ta} and {tb}.")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], lb):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shapes differ, {jnp.shape(x)} and {jnp.shape(y)}.")
    sq = lambda leaves: sum(jnp.sum(jnp.square(jnp.asarray(x))) for x in leaves)  # noqa: E731
    err = jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(x) - jnp.asarray(y))) for x, y in zip(la, lb)))
    return _rel(err, jnp.sqrt(sq(la)), jnp.sqrt(sq(lb)))


def assert_grad(loss_fn, grad_fn, params, *args, **kwargs) -> GradCheck:
    """`jgc.check_grad`, then raise `jgc.GradCheckError` (an AssertionError) if it failed.

    Host-side: call it outside `jax.jit`. Takes the same arguments as `check_grad`.

    Returns:
      The `jgc.GradCheck` when every check (every seed, for a batched call) passed.

    Raises:
      GradCheckError: with the report as its message.
    """
    res = check_grad(loss_fn, grad_fn, params, *args, **kwargs)
    if not bool(np.all(np.asarray(res.passed))):
        raise GradCheckError("\n" + res.report())
    return res
