"""The public checks: check_grad, numeric_grad, relative_error, assert_grad (thin)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _engine, _host, _jit, _pipeline, _probes, _tree, _validate
from ._engine import Engine
from ._problem import Problem
from ._result import GradCheck, GradCheckError
from ._typing import PyTree, Tracer


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
    partial_eval: bool = True,
    vectorized: bool = False,
    host: bool | None = None,
) -> GradCheck:
    """Check a hand-written gradient against finite differences, coordinate by coordinate.

    Every floating-point coordinate θ_i of `params` is perturbed on its own and
    `(J(θ + h_i e_i) − J(θ − h_i e_i)) / 2h_i` (for `method="central"`) is compared
    with `grad_fn`. The loss evaluations are vmapped in chunks and jit-compiled;
    the call is pure and can itself run under `jax.jit` and `jax.vmap`.

    The verdict has three outcomes (docs/verdicts.md): **failed** when some leaf's
    discrepancy is beyond what the finite differences can explain (each coordinate's error
    is bounded from the loss's measured rounding level and, where it matters, a Richardson
    estimate at step 2h; coordinates at a kink whose analytic value is a valid subgradient
    agree); **passed** when every leaf agrees within `tol` and the differences resolve it;
    **inconclusive** otherwise. On concrete inputs what is unresolved is re-measured (in
    float64 for a float32 check, else with better steps) before the check gives up on it.

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`. The whole loss, regularization
        included; randomness (dropout) must come from a key in `args`. Written with
        `jax.numpy` it is traced and compiled; NumPy code (it cannot be traced) is evaluated
        on the host through `jax.pure_callback` with NumPy copies of its inputs, on concrete
        inputs only, and may return `(cost, cache)` (docs/numpy.md).
      grad_fn: `grad_fn(params, *args) -> pytree` like `params` (same structure,
        shapes and dtypes); `None` checks `jax.grad(loss_fn)`. A NumPy backward pass
        (one that cannot be traced) is called on the host when the inputs are concrete,
        with NumPy copies; its dict may use the course's keys (`dW1` for `W1`, extra keys
        ignored and listed) and float64 results for float32 params are cast (and named).
      params: pytree of parameters. Floating-point leaves are checked; integer,
        boolean, PRNG-key and non-array leaves are passed through and listed as not checked.
      *args: passed unchanged to `loss_fn` and `grad_fn`; not differentiated.
      eps: base step; coordinate i is stepped by `eps·max(1, |θ_i|)`. `None` picks the
        default for the loss's real precision (its dtype, or float32 for a loss that
        computes in float32 inside) and `method`.
      tol: the relative error a pass guarantees (per leaf); `None` picks the default for
        the precision, and then a failure needs a discrepancy beyond the noise only. A
        given `tol` is also the bar for a failure.
      method: finite-difference stencil, one of "central", "forward", "five_point",
        "complex_step" (evaluates the loss at θ + i·h·e_j: exact to rounding, but the
        loss must carry complex values through).
      chunk_size: probes evaluated per compiled call; `None` bounds memory to a few tens
        of MB of perturbed parameters.
      autodiff: also compute `jax.grad(loss_fn)` and fill `result.autodiff` (manual vs
        autodiff, autodiff vs numeric); the report gains a line with the three
        distances. `passed` still judges `grad_fn` against finite differences only.
      coords: check only this many coordinates, drawn at random with `key` and
        stratified so every checked leaf gets some (see docs/scale.md); the result is a
        `jgc.SampledCheck` with NaN in `numeric` and `analytic` where not sampled.
      key: PRNG key for `coords`.
      x64: run the check of a float32 model in float64: x64 is enabled for the call
        only, float params and float arrays in `args` are cast to float64, and the
        setting is restored afterwards (also on error). `loss_fn` and `grad_fn` must
        follow their inputs' dtype. It cannot be used inside `jax.jit`/`jax.vmap`.
      partial_eval: on concrete inputs, evaluate a leaf's probes on only the part of the loss
        downstream of it (or only the entries a one-entry change touches) where the cost model
        says that pays for compiling its own program; same numbers up to rounding, and
        `result.leaf_eval` says which path each leaf took (docs/partial_eval.md). False: the
        whole loss for every probe.
      vectorized: a host (NumPy) `loss_fn` broadcasts over a leading axis: called with every
        checked parameter leaf of shape (B, *shape) (args as they are), it returns B costs; the
        host is then called once per chunk of points instead of once per point.
      host: None (default) evaluates `loss_fn` on the host only when it cannot be traced; True
        always (NumPy code that happens to trace); False never (the tracing error is raised).

    Returns:
      A `jgc.GradCheck`. Call `.report()` (or `print` it) for the table and
      `.worst(k)` for the worst coordinates.

    Raises:
      TypeError, ValueError: on malformed input (the message names the function and leaf).

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] * x))
      >>> grad = lambda p, x: {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2)}
      >>> res = jgc.check_grad(loss, grad, {"w": jnp.array([0.3, -1.2])}, jnp.array([2.0, 0.5]))
      >>> bool(res.passed)
      True
    """
    _validate.options(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _validate.flag("autodiff", autodiff)
    _validate.flag("x64", x64)
    _validate.flag("partial_eval", partial_eval)
    if x64:
        options = dict(eps=eps, tol=tol, method=method, chunk_size=chunk_size, autodiff=autodiff, coords=coords, key=key)
        options.update(partial_eval=partial_eval, vectorized=vectorized, host=host)
        return in_x64(check_grad, loss_fn, grad_fn, params, args, options)
    params = _validate.prepare(params)
    _tree.layout(params)  # fail here, before tracing, on an empty or unusable tree
    options = _pipeline.Options(method, chunk_size, autodiff, partial=partial_eval)
    if coords is not None or key is not None:
        if coords is None or key is None:
            raise ValueError(f"a sampled check needs both coords and key; received coords={coords!r}, key={key!r}.")
        if autodiff:
            raise ValueError("autodiff=True needs the full check: it is not supported with coords=.")
        _validate.count("coords", coords)
        _validate.key(key, where="check_grad")
        options = dataclasses.replace(options, mode=_pipeline.SAMPLED, coords=int(coords))

    def go(loss, on_host):
        opts = _host.options(options, vectorized) if on_host else options
        return _jit.check(_pipeline.run, (loss, grad_fn), params, args, opts, eps, tol, key)

    autograd = "grad_fn=None" if grad_fn is None else "autodiff=True" if autodiff else ""
    return _host.run(go, loss_fn, params, args, vectorized, host=host, autograd=autograd)


_X64_TRACED = (
    "x64=True cannot be used inside jax.jit, jax.vmap or another transformation: {path} is a "
    "traced value, and x64 is fixed when tracing starts. Call check_grad(..., x64=True) outside "
    "the transformation, or enable x64 yourself around the whole traced call "
    "(`with jax.enable_x64(True):`) and pass float64 params."
)


def in_x64(check, loss_fn, grad_fn, params, args, options):
    """`check(...)` with x64 enabled for the call only and float leaves cast to float64."""
    for path, leaf in jax.tree_util.tree_flatten_with_path((params, args))[0]:
        if isinstance(leaf, Tracer):
            where = ("params" if path[0].idx == 0 else "args") + jax.tree_util.keystr(path[1:])
            raise ValueError(_X64_TRACED.format(path=where))
    with jax.enable_x64(True):
        params, args = _engine.explicit(_tree.to_float64, (params, args), "the float64 params and args to the device")
        return check(loss_fn, grad_fn, params, *args, **options)


def numeric_grad(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    *args,
    eps: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
    partial_eval: bool = True,
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
    _validate.options(loss_fn, None, method, eps, None, chunk_size, grad_name=None)
    _validate.flag("partial_eval", partial_eval)
    params = _validate.prepare(params)
    lay = _tree.layout(params)
    options = _pipeline.Options(method, chunk_size, partial=partial_eval)

    def go(loss, on_host):
        opts = _host.options(options, False) if on_host else options
        return _jit.check(_numeric, (loss,), params, args, opts, eps)

    return _tree.unravel_full(lay, _host.run(go, loss_fn, params, args, False))


def _numeric(loss_fn, params, args, options, eps, tol, key):
    """The pipeline's first two steps on every coordinate, stage 1 only: the numeric gradient."""
    problem = Problem(loss_fn, params, args, options.method)
    xp, n = problem.xp, problem.lay.n
    engine = Engine(problem, _probes.COORDS, n, options.chunk_size, options.partial)
    probes = _probes.Probes(xp.arange(n, dtype=np.int32), xp.zeros(n, problem.dtype))
    side = _pipeline.Side(None, None)
    _, measured, _, _ = _pipeline.calibrated(problem, engine, side, probes, eps, doubled=False)
    return measured.numeric


def relative_error(a: PyTree, b: PyTree) -> jax.Array:
    """‖a − b‖₂ / (‖a‖₂ + ‖b‖₂) over all leaves of two pytrees of the same structure (0 if both are 0).

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> float(jgc.relative_error({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 0.0])}))
      0.0
    """
    _validate.numbers("relative_error: a", a)
    _validate.numbers("relative_error: b", b)
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        raise ValueError(f"relative_error needs two pytrees of the same structure; received {ta} and {tb}.")
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], lb, strict=True):
        if jnp.shape(x) != jnp.shape(y):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shapes differ, {jnp.shape(x)} and {jnp.shape(y)}.")
    if _jit.is_traced((la, lb)):
        return _relative_error(la, lb)
    # one compiled program, its inputs put on the device explicitly: no eager op, no implicit transfer
    host = lambda leaves: _engine.to_device([x if _tree.is_array(x) else np.asarray(x) for x in leaves])  # noqa: E731
    return _jit.program(("relative_error",), _relative_error)(host(la), host(lb))


def _relative_error(la, lb):
    sq = lambda leaves: sum(jnp.sum(jnp.square(jnp.asarray(x))) for x in leaves)  # noqa: E731
    err = jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(x) - jnp.asarray(y))) for x, y in zip(la, lb, strict=True)))
    na, nb = jnp.sqrt(sq(la)), jnp.sqrt(sq(lb))
    denom = na + nb
    return jnp.where(denom == 0, jnp.zeros_like(err), err / jnp.where(denom == 0, 1, denom))


def raise_unless_passed(res: GradCheck) -> GradCheck:
    """Raise `jgc.GradCheckError` (message: the report) unless every check in `res` is a firm pass."""
    __tracebackhide__ = True
    if not bool(np.all(np.asarray(res.passed))):
        raise GradCheckError("\n" + res.report())
    return res


def assert_grad(loss_fn, grad_fn, params, *args, **kwargs) -> GradCheck:
    """`jgc.check_grad`, then raise `jgc.GradCheckError` (an AssertionError) unless it is a firm pass.

    Host-side: call it outside `jax.jit`. Takes the same arguments as `check_grad`. An
    inconclusive check raises too: its report says which leaves the differences could not
    resolve and what to do.

    Returns:
      The `jgc.GradCheck` when every check (every seed, for a batched call) passed.

    Raises:
      GradCheckError: with the report as its message.
    """
    __tracebackhide__ = True
    return raise_unless_passed(check_grad(loss_fn, grad_fn, params, *args, **kwargs))
