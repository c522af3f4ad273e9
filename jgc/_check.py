"""The public checks: validate → flatten → probes → engine → compare → result."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _diagnose, _engine, _partial, _probes, _stencils, _tree
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


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; received {type(value).__name__}: {value!r}.")


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


def _check_grad_tree(lay: _tree.Layout, grad: PyTree, name: str = "grad_fn", like: str = "params") -> None:
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
            f"{name} returned a pytree whose structure differs from {like}: {'; '.join(parts)}. "
            f"Expected the structure of {like}: {lay.treedef}."
        )
    if treedef != lay.treedef:
        raise ValueError(
            f"{name} returned a pytree with other containers than {like}: received {treedef}, expected {lay.treedef}."
        )
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
        return isinstance(other, _Static) and (
            self.value is other.value or self._key() == other._key() and self.value == other.value
        )


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
    try:
        hash(fn)
    except TypeError:  # e.g. a spec holding eqx.filter_grad(...), an unhashable Module
        fn = _ByIdentity(fn)
    dynamic, options = _engine.place(dynamic), dict(zip(options, _engine.place(list(options.values())), strict=True))
    return _jitted(fn, static, dynamic, options)


@dataclasses.dataclass(frozen=True, eq=False)
class _ByIdentity:
    """A callable that jit can take as a static argument: hashed and compared by identity."""

    fn: Callable

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


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
    autodiff: bool = False
    partial_eval: bool = False

    def __call__(self, params, args, eps, tol):
        return _check(self, params, args, eps, tol)


def _loss_of_theta(loss_fn, lay, params, args, keep_complex=False):
    def loss(theta):
        return loss_fn(_tree.unravel(lay, theta, params, keep_complex=keep_complex), *args)

    return loss


_COMPLEX_MSG = (
    "method='complex_step' evaluates loss_fn at complex parameters θ + i·h·e_j, {problem} "
    "Use a loss written with complex-safe operations (no .astype to a real dtype, no "
    "jnp.real/jnp.abs on the parameters' path), or another method: method='central' "
    "(the default) or method='five_point'."
)


def _check_complex_loss(loss, theta) -> None:
    """Fail at once, with advice, when the loss cannot carry a complex step through."""
    z = jax.ShapeDtypeStruct(theta.shape, jnp.result_type(theta.dtype, jnp.complex64))
    try:
        out = jax.eval_shape(loss, z)
    except Exception as e:  # noqa: BLE001 -- any failure means the loss is not complex-safe
        raise TypeError(_COMPLEX_MSG.format(problem=f"but loss_fn raised {type(e).__name__}: {str(e)[:300]}")) from e
    if not jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(
            _COMPLEX_MSG.format(
                problem=f"but loss_fn returned a real {jnp.dtype(out.dtype).name} for complex parameters, "
                "so the imaginary part that carries the derivative was dropped."
            )
        )


def _evaluate(spec: _Spec, lay, params, args, eps, stencil):
    """θ, the engine's derivatives along every coordinate, its stencil values, the count, eps."""
    _check_loss_output(jax.eval_shape(lambda: spec.loss_fn(params, *args)))
    theta = _tree.ravel(lay, params)
    if eps is None:
        eps = _stencils.default_eps(lay.low_dtype, spec.method)
    loss = _loss_of_theta(spec.loss_fn, lay, params, args, keep_complex=stencil.complex)
    if stencil.complex:
        _check_complex_loss(loss, theta)
    if spec.partial_eval:  # per leaf: only the equations downstream of it (jgc/_partial.py)
        numeric, values, num_evals = _partial.numeric_flat(
            spec.loss_fn, lay, params, args, theta, eps, stencil, spec.chunk_size, loss
        )
        return theta, numeric, values, num_evals, jnp.asarray(eps, theta.dtype)
    probe = _probes.coordinates(theta, eps)
    numeric, values, num_evals = _engine.directional_derivatives(loss, theta, probe, lay.n, stencil, spec.chunk_size)
    return theta, numeric, values, num_evals, jnp.asarray(eps, theta.dtype)


def _numeric_flat(spec: _Spec, lay, params, args, eps):
    """θ, the finite-difference gradient along every coordinate, and the evaluation count."""
    theta, numeric, _, num_evals, eps = _evaluate(spec, lay, params, args, eps, _stencils.get(spec.method))
    return theta, numeric, num_evals, eps


def _setup(spec, lay, params, args, eps, tol):
    """What every check on the engine starts from: the loss checked, stencil, θ, eps and tol (as arrays)."""
    _check_loss_output(jax.eval_shape(lambda: spec.loss_fn(params, *args)))
    stencil = _stencils.get(spec.method)
    theta = _tree.ravel(lay, params)
    eps = _stencils.default_eps(lay.low_dtype, spec.method) if eps is None else eps
    tol = _stencils.default_tol(lay.low_dtype, spec.method) if tol is None else tol
    return stencil, theta, jnp.asarray(eps, theta.dtype), jnp.asarray(tol, theta.dtype)


def _analytic_flat(spec: _Spec, lay, params, args, theta):
    if spec.grad_fn is None:
        return jax.grad(_loss_of_theta(spec.loss_fn, lay, params, args))(theta)
    grad = spec.grad_fn(params, *args)
    _check_grad_tree(lay, grad)
    return _tree.ravel(lay, grad)


def _rel(num_err, norm_a, norm_b):
    denom = norm_a + norm_b
    return jnp.where(denom == 0, jnp.zeros_like(num_err), num_err / jnp.where(denom == 0, 1, denom))


# A coordinate's discrepancy is discounted by _NOISE_FACTOR × its estimated noise; the
# rounding floor is the final rounding of each loss value the stencil combines (½ ulp each;
# rounding inside the loss shows up in |D(h) − D(2h)|).
_NOISE_FACTOR = 2.0
_ROUNDING_ULPS = 0.5


def _noise_and_kinks(ext, theta, eps, numeric, analytic, values, tol):
    """Per coordinate: estimated finite-difference error, and kinks accepted as subgradients.

    noise = |D(h) − D(2h)| (Richardson: the truncation error, plus the rounding noise
    the two steps see differently) + a rounding floor (ulps of the loss values / h).
    A kink: the one-sided derivatives (forward and backward differences, each
    extrapolated from h and 2h so that curvature cancels) disagree beyond noise,
    and the jump matters at the tolerance (against this coordinate's and the whole
    gradient's RMS scale: rounding floors underestimate noise when the loss is a sum
    with cancellation, so a relative threshold guards against calling noise a kink).
    """
    h = _stencils.coordinate_step(theta, eps)
    u = jnp.finfo(theta.dtype).eps
    w1 = jnp.asarray(ext.stencil.weights, values.dtype)
    w2 = jnp.asarray(ext.weights2, values.dtype)
    d2 = jnp.real(values @ w2) / h
    rounding = _ROUNDING_ULPS * u * jnp.sum(jnp.abs(jnp.real(values * w1[None, :])), axis=1) / h
    noise = jnp.abs(numeric - d2) + rounding
    band = _NOISE_FACTOR * noise
    kink = jnp.zeros(theta.shape, bool)
    if ext.one_sided:
        g = {o: jnp.real(values[:, ext.index(o)]) for o in (2.0, 1.0, 0.0, -1.0, -2.0)}
        dp1, dm1 = (g[1.0] - g[0.0]) / h, (g[0.0] - g[-1.0]) / h
        dp2, dm2 = (g[2.0] - g[0.0]) / (2 * h), (g[0.0] - g[-2.0]) / (2 * h)
        # one-sided derivatives, each Richardson-extrapolated (O(h²)): the curvature of a
        # piecewise-smooth loss does not widen or shift the interval they bound
        right, left = 2 * dp1 - dp2, 2 * dm1 - dm2
        jump = right - left
        big = jnp.maximum(jnp.maximum(jnp.abs(g[2.0]), jnp.abs(g[-2.0])), jnp.maximum(jnp.abs(g[1.0]), jnp.abs(g[-1.0])))
        floor = 16 * _ROUNDING_ULPS * u * jnp.maximum(big, jnp.abs(g[0.0])) / h
        margin = band + floor
        lo, hi = jnp.minimum(right, left) - margin, jnp.maximum(right, left) + margin
        scale = jnp.sqrt(jnp.mean(numeric * numeric + analytic * analytic))
        matters = tol * (jnp.abs(numeric) + jnp.abs(analytic) + scale)
        kink = (jnp.abs(jump) > 2 * margin + matters) & (analytic >= lo) & (analytic <= hi)
    return noise, band, kink


def _check(spec: _Spec, params, args, eps, tol) -> GradCheck:
    lay = _tree.layout(params)
    ext = _stencils.extended(_stencils.get(spec.method))
    theta, numeric, values, num_evals, eps = _evaluate(spec, lay, params, args, eps, ext.stencil)
    analytic = _analytic_flat(spec, lay, params, args, theta)
    if tol is None:
        tol = _stencils.default_tol(lay.low_dtype, spec.method)
    tol = jnp.asarray(tol, theta.dtype)

    # J(θ) a second time, from a separate trace of the loss: a loss that draws new
    # randomness per evaluation (not from a key in *args) gives another value.
    j0 = jnp.real(values[0, ext.index(0.0)]) if lay.n else spec.loss_fn(params, *args)
    j0_again = jnp.asarray(spec.loss_fn(params, *args), theta.dtype)
    num_evals += 1
    u = jnp.finfo(theta.dtype).eps
    deterministic = (j0 == j0_again) | (jnp.abs(j0 - j0_again) <= 4 * u * jnp.abs(j0)) | (jnp.isnan(j0) & jnp.isnan(j0_again))

    noise, band, kink = _noise_and_kinks(ext, theta, eps, numeric, analytic, values, tol)
    kink = kink & deterministic  # one-sided differences mean nothing when J(θ) is not reproducible
    res = _compare(
        lay,
        numeric,
        analytic,
        eps,
        tol,
        num_evals,
        spec.method,
        theta=theta,
        noise=noise,
        kink=kink,
        deterministic=deterministic,
        loss_values=jnp.stack([j0, j0_again]),
        leaf_eval=_partial.plan(spec.loss_fn, lay, params, args, ext.stencil) if spec.partial_eval else (),
    )
    if spec.autodiff:
        res = _with_autodiff(res, spec, lay, params, args, theta, numeric, analytic)
    return res


def _compare(
    lay,
    numeric,
    analytic,
    eps,
    tol,
    num_evals,
    method,
    check="check_grad",
    *,
    theta=None,
    noise=None,
    kink=None,
    deterministic=None,
    loss_values=None,
    leaf_eval=(),
) -> GradCheck:
    """Compare two flat vectors ordered like θ of `lay`, leaf by leaf, into a GradCheck.

    Shared by every check: the layout says which leaf each coordinate belongs to. Each
    coordinate's discrepancy is discounted by `_NOISE_FACTOR` × its estimated `noise`,
    and coordinates at an accepted `kink` count as agreeing (both optional).
    """
    if tol is None:
        tol = _stencils.default_tol(lay.low_dtype, method)
    tol = jnp.asarray(tol, numeric.dtype)
    noise = jnp.zeros_like(numeric) if noise is None else noise
    kink = jnp.zeros(numeric.shape, bool) if kink is None else kink
    deterministic = jnp.asarray(True) if deterministic is None else deterministic
    band = _NOISE_FACTOR * noise
    diff = numeric - analytic
    excess = jnp.where(kink, 0, jnp.sign(diff) * jnp.maximum(jnp.abs(diff) - band, 0))

    seg = _tree.segment_ids(lay)
    k = len(lay.sizes)
    sums = jax.ops.segment_sum(jnp.stack([diff, numeric, analytic, excess, noise], 1) ** 2, seg, num_segments=k)
    leaf_err, leaf_num, leaf_ana, leaf_ex, leaf_noise = sums.T
    err, norm_num, norm_ana = jnp.sqrt(leaf_err.sum()), jnp.sqrt(leaf_num.sum()), jnp.sqrt(leaf_ana.sum())
    rel_error = _rel(err, norm_num, norm_ana)
    excess_rel = _rel(jnp.sqrt(leaf_ex.sum()), norm_num, norm_ana)
    leaf_rel = _rel(jnp.sqrt(leaf_err), jnp.sqrt(leaf_num), jnp.sqrt(leaf_ana))
    leaf_ex_rel = _rel(jnp.sqrt(leaf_ex), jnp.sqrt(leaf_num), jnp.sqrt(leaf_ana))
    # A leaf also passes when its RMS discrepancy is small against the whole gradient's RMS scale.
    sizes = jnp.asarray(lay.sizes, numeric.dtype)
    scale = (norm_num + norm_ana) / math.sqrt(lay.n)
    leaf_ok = (leaf_ex_rel <= tol) | (jnp.sqrt(leaf_ex / sizes) <= tol * scale)
    finite = jnp.all(jnp.isfinite(numeric)) & jnp.all(jnp.isfinite(analytic))
    passed = (excess_rel <= tol) & jnp.all(leaf_ok) & finite & deterministic
    theta = jnp.zeros_like(numeric) if theta is None else theta  # no θ (layer checks): no L2 hint
    hint, hint_param = _diagnose.diagnose(lay, theta, numeric, analytic, ~leaf_ok)
    return GradCheck(
        rel_error=rel_error,
        passed=passed,
        tol=tol,
        eps=jnp.asarray(eps, numeric.dtype),
        numeric=_tree.unravel_full(lay, numeric),
        analytic=_tree.unravel_full(lay, analytic),
        leaf_rel_error=_tree.per_leaf(lay, leaf_rel),
        leaf_passed=_tree.per_leaf(lay, leaf_ok, fill=True),
        num_evals=jnp.asarray(num_evals, jnp.int32),
        method=method,
        layout=lay,
        check=check,
        rel_error_autodiff=jnp.full((), jnp.nan, numeric.dtype),
        rel_error_autodiff_numeric=jnp.full((), jnp.nan, numeric.dtype),
        autodiff_passed=jnp.asarray(True),
        excess_rel_error=excess_rel,
        noise_floor=_rel(jnp.sqrt(leaf_noise.sum()), norm_num, norm_ana),
        noise=_tree.unravel_full(lay, noise),
        leaf_noise_floor=_tree.per_leaf(lay, _rel(jnp.sqrt(leaf_noise), jnp.sqrt(leaf_num), jnp.sqrt(leaf_ana))),
        kink=_tree.unravel_full(lay, kink, fill=False),
        deterministic=deterministic,
        loss_values=loss_values,
        hint=_tree.per_leaf(lay, hint, fill=0),
        hint_param=_tree.per_leaf(lay, hint_param, fill=0),
        leaf_eval=leaf_eval,
    )


def _with_autodiff(res: GradCheck, spec: _Spec, lay, params, args, theta, numeric, analytic) -> GradCheck:
    """Add the jax.grad cross-check: manual vs autodiff and autodiff vs numeric."""
    auto = jax.grad(_loss_of_theta(spec.loss_fn, lay, params, args))(theta)
    norm = lambda x: jnp.sqrt(jnp.sum(x * x))  # noqa: E731
    man_auto = _rel(norm(analytic - auto), norm(analytic), norm(auto))
    auto_num = _rel(norm(auto - numeric), norm(auto), norm(numeric))
    finite = jnp.all(jnp.isfinite(auto))
    return dataclasses.replace(
        res,
        autodiff=_tree.unravel_full(lay, auto),
        rel_error_autodiff=man_auto,
        rel_error_autodiff_numeric=auto_num,
        autodiff_passed=(man_auto <= res.tol) & (auto_num <= res.tol) & finite,
    )


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
    autodiff: bool = False,
    coords: int | None = None,
    key: jax.Array | None = None,
    x64: bool = False,
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
      method: finite-difference stencil, one of "central", "forward", "five_point",
        "complex_step" (evaluates the loss at θ + i·h·e_j: exact to rounding, but
        the loss must carry complex values through).
      chunk_size: probes evaluated per vmapped batch; `None` bounds memory to a
        few tens of MB of perturbed parameters.
      autodiff: also compute `jax.grad(loss_fn)` and fill `rel_error_autodiff`
        (manual vs autodiff), `rel_error_autodiff_numeric` (autodiff vs numeric),
        `autodiff` and `autodiff_passed`; the report gains a line with the three
        distances. A wrong `custom_vjp`/`custom_jvp` rule or non-differentiable
        code in `loss_fn` shows as autodiff disagreeing with finite differences.
        `passed` still judges `grad_fn` against finite differences only.
      coords: check only this many coordinates, drawn at random with `key` and
        stratified so every checked leaf gets some (see docs/scale.md); the result is a
        `jgc.SampledCheck` with NaN in `numeric` and `analytic` where not sampled.
      key: PRNG key for `coords`.
      x64: run the check of a float32 model in float64: x64 is enabled for the
        call only, float params and float arrays in `args` are cast to float64,
        and the setting is restored afterwards (also on error). Use it when a
        float32 verdict is unclear (a discrepancy near the tolerance or the noise
        floor); `loss_fn` and `grad_fn` must follow their inputs' dtype. It cannot
        be used inside `jax.jit`/`jax.vmap` (x64 is fixed when tracing starts).
      partial_eval: evaluate, for the probes of each leaf, only the part of the loss
        downstream of that leaf (the rest once); same numbers up to rounding,
        `result.leaf_eval` says which leaves took which path (docs/partial_eval.md).

    Each coordinate's discrepancy is discounted by twice its estimated
    finite-difference noise (|D(h) − D(2h)| plus a rounding floor; the doubled
    step costs extra loss evaluations, counted in `num_evals`), and coordinates
    at a kink (relu at 0, max, abs) whose analytic value is a valid subgradient
    are accepted. The loss is evaluated twice at θ; if the values differ the
    check fails as non-deterministic.

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
    _check_flag("autodiff", autodiff)
    _check_flag("x64", x64)
    _check_flag("partial_eval", partial_eval)
    if x64:
        options = dict(eps=eps, tol=tol, method=method, chunk_size=chunk_size, autodiff=autodiff, coords=coords, key=key)
        options["partial_eval"] = partial_eval
        return _in_x64(check_grad, loss_fn, grad_fn, params, args, options)
    params = _prepare(params)
    _tree.layout(params)  # fail here, before tracing, on an empty or unusable tree
    if coords is not None or key is not None:
        if autodiff or partial_eval:
            raise ValueError("autodiff=True and partial_eval=True need the full check: they are not supported with coords=.")
        from ._sampled import check_sampled

        options = dict(eps=eps, tol=tol, method=method, chunk_size=chunk_size)
        return check_sampled(loss_fn, grad_fn, params, args, coords=coords, key=key, **options)
    return _call(_Spec(loss_fn, grad_fn, method, chunk_size, autodiff, partial_eval), params, args, eps=eps, tol=tol)


_X64_TRACED = (
    "x64=True cannot be used inside jax.jit, jax.vmap or another transformation: {path} is a "
    "traced value, and x64 is fixed when tracing starts. Call check_grad(..., x64=True) outside "
    "the transformation, or enable x64 yourself around the whole traced call "
    "(`with jax.enable_x64(True):`) and pass float64 params."
)


def _in_x64(check, loss_fn, grad_fn, params, args, options):
    """`check(...)` with x64 enabled for the call only and float leaves cast to float64."""
    for path, leaf in jax.tree_util.tree_flatten_with_path((params, args))[0]:
        if isinstance(leaf, jax.core.Tracer):
            where = ("params" if path[0].idx == 0 else "args") + jax.tree_util.keystr(path[1:])
            raise ValueError(_X64_TRACED.format(path=where))
    with jax.enable_x64(True):
        up = lambda x: (  # noqa: E731
            jnp.asarray(x, jnp.float64) if _tree.is_array(x) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
        )
        params, args = jax.tree_util.tree_map(up, (params, args))
        return check(loss_fn, grad_fn, params, *args, **options)


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
    _check_flag("partial_eval", partial_eval)
    params = _prepare(params)
    _tree.layout(params)
    return _call(_NumericSpec(loss_fn, None, method, chunk_size, partial_eval=partial_eval), params, args, eps=eps, tol=None)


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
