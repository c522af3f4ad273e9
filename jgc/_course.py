"""The courses' conventions, checked as they are: `course` and `check_layer`.

- `course(forward_propagation, backward_propagation, parameters, X, Y)`: the deep-learning
  course's exercise — `forward(X, Y, parameters) -> (cost, cache)`, `backward(X, Y, cache) ->
  {"dW1": …, "db1": …, "dZ1": …}` — as one gradient check of `parameters` (the cost checked,
  the cache of the same point passed to the backward pass, gradients matched by name).
- `check_layer(forward, backward, *inputs, key)`: a CS231n layer pair — `forward(*inputs) ->
  (out, cache)`, `backward(dout, cache) -> (dx, dw, …)` — as the gradient check of the loss
  Σ forward(*inputs)[0] · dout for a drawn upstream gradient `dout`, every floating-point input
  a leaf of the report (named after forward's arguments).

Both are the one pipeline (`_pipeline.run`) on wrappers of the user's functions: NumPy code
runs on the host (`_host`), JAX code is traced and compiled. Float64 NumPy inputs are checked
in float64: x64 is enabled for the call only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _host, _jit, _pipeline, _tree, _validate
from ._result import GradCheck, LayerCheck
from ._typing import PyTree


def _x64_for(tree):
    """x64 for the call when a NumPy input is float64 and x64 is off (its dtype is the one checked)."""
    f64 = any(isinstance(x, (np.ndarray, np.generic)) and x.dtype == np.float64 for x in jax.tree_util.tree_leaves(tree))
    if f64 and not jax.config.jax_enable_x64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _validate_pair(forward: tuple, backward: tuple, eps, tol, chunk_size) -> None:
    """The options of a convention's check: its two functions (name, value), eps, tol, chunk_size."""
    for name, fn in (forward, backward):
        _validate.callable_(name, fn)
    _validate.positive("eps", eps)
    _validate.positive("tol", tol)
    _validate.count("chunk_size", chunk_size, allow_none=True)


def _check(loss, grad, params, args, options: _pipeline.Options, eps, tol, host):
    def go(fn, on_host):
        opts = _host.options(options, False) if on_host else options
        return _jit.check(_pipeline.run, (fn, grad), params, args, opts, eps, tol, None)

    return _host.run(go, loss, params, args, False, name=options.loss_name, host=host)


# ---------------------------------------------------------------- the course's exercise


@dataclasses.dataclass(frozen=True)
class _CourseLoss:
    """`(params, X, Y) -> cost` of the course's `forward(X, Y, parameters) -> (cost, cache)`."""

    forward: _jit.Ref
    jgc_wrapper = True

    def __call__(self, params, X, Y):
        out = _validate.trace("forward_propagation", self.forward(), X, Y, params)
        return _cost(_split("forward_propagation", out, "(cost, cache)")[0])


@dataclasses.dataclass(frozen=True)
class _CourseGrad:
    """`(params, X, Y) -> gradients` of the course's `backward(X, Y, cache)`, the cache from the same point."""

    forward: _jit.Ref
    backward: _jit.Ref
    jgc_wrapper = True

    def __call__(self, params, X, Y):
        # named as the gradient's: inside it, what does not trace makes the gradient a host one
        out = _validate.trace("backward_propagation", self.forward(), X, Y, params)
        _, cache = _split("forward_propagation", out, "(cost, cache)")
        grads = _validate.trace("backward_propagation", self.backward(), X, Y, cache)
        if not isinstance(grads, dict):
            raise TypeError(
                f"backward_propagation must return a dict of gradients keyed like the parameters (dW1 for W1, …); "
                f"received {type(grads).__name__}."
            )
        return grads


def _split(name: str, out, expected: str):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        kind = f"a {type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise TypeError(f"{name} must return {expected}, a pair; received {kind}.")
    return out


def _cost(c):
    """A cost as the loss's scalar: a NumPy 0-d or (1, 1) array, a float (the course's `np.squeeze(cost)`)."""
    if isinstance(c, (float, int)) or isinstance(c, (np.ndarray, np.generic)):
        return np.asarray(c).reshape(()) if np.size(c) == 1 else c
    return jnp.reshape(c, ()) if jnp.size(c) == 1 else c


def course(
    forward_propagation: Callable,
    backward_propagation: Callable,
    parameters: PyTree,
    X,
    Y,
    *,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
    host: bool | None = None,
) -> GradCheck:
    """Check the course's gradient-checking exercise as written: one call, no rewrite.

    `forward_propagation(X, Y, parameters) -> (cost, cache)` and
    `backward_propagation(X, Y, cache) -> gradients` (a dict with `dW1`, `db1`, … and
    intermediates such as `dZ1`, `dA1`) are the course's functions, NumPy or JAX. The cost is
    the loss; the gradient of `parameters[k]` is `gradients["d" + k]` (or `gradients[k]`),
    the other keys are listed in the report as ignored. NumPy code runs on the host; float64
    NumPy inputs are checked in float64 (x64 for the call only).

    Args:
      forward_propagation: `(X, Y, parameters) -> (cost, cache)`.
      backward_propagation: `(X, Y, cache) -> dict of gradients`.
      parameters: dict of arrays (`W1`, `b1`, …), not mutated.
      X, Y: the data, passed unchanged.
      eps, tol, method, chunk_size, host: as in `jgc.check_grad`.

    Returns:
      A `jgc.GradCheck` whose leaves are the parameters (`['W1']`, `['b1']`, …).

    Examples:
      >>> import numpy as np, jgc
      >>> fwd = lambda X, Y, p: (float(np.sum((p["W"] @ X - Y) ** 2)), (X, Y, p["W"]))
      >>> bwd = lambda X, Y, c: {"dW": 2 * (c[2] @ c[0] - c[1]) @ c[0].T, "dZ": None}
      >>> X, Y = np.eye(2), np.ones((1, 2))
      >>> bool(jgc.course(fwd, bwd, {"W": np.array([[0.5, -1.0]])}, X, Y).passed)
      True
    """
    _validate_pair(
        ("forward_propagation", forward_propagation), ("backward_propagation", backward_propagation), eps, tol, chunk_size
    )
    if not isinstance(parameters, dict):
        raise TypeError(
            f"parameters must be a dict of arrays (W1, b1, …), as in the course; received {type(parameters).__name__}."
        )
    loss = _CourseLoss(_jit.Ref(forward_propagation))
    grad = _CourseGrad(_jit.Ref(forward_propagation), _jit.Ref(backward_propagation))
    options = _pipeline.Options(method, chunk_size, loss_name="forward_propagation", grad_name="backward_propagation")
    with _x64_for((parameters, X, Y)):
        _tree.layout(parameters)
        return _check(loss, grad, parameters, (X, Y), options, eps, tol, host)


# ---------------------------------------------------------------- CS231n layer pairs


def _freeze(x):
    """A hashable key of a non-differentiated input by value (dicts of hyper-parameters, ints)."""
    if isinstance(x, dict):
        return ("dict", tuple(sorted(((repr(k), _freeze(v)) for k, v in x.items()))))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_freeze(v) for v in x))
    if isinstance(x, (np.ndarray, np.generic)):
        return ("array", x.dtype.str, np.shape(x), np.ascontiguousarray(x).tobytes())
    try:
        hash(x)
        return (type(x).__name__, x)
    except TypeError:
        return ("id", id(x))


@dataclasses.dataclass(frozen=True, eq=False)
class _Inputs:
    """The layer's inputs: the differentiated ones by name (`positions`), the others held as
    deep copies (each call gets a fresh copy: a forward that writes into them, like batchnorm's
    running statistics, changes nothing the user passed). Equal when the inputs are equal."""

    positions: tuple
    names: tuple
    others: tuple  # (position, value) of the other inputs

    @property
    def key(self):
        return (self.positions, self.names, tuple((i, _freeze(v)) for i, v in self.others))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Inputs) and self.key == other.key

    def assemble(self, params) -> list:
        xs = [None] * (len(self.positions) + len(self.others))
        for i, name in zip(self.positions, self.names, strict=True):
            xs[i] = params[name]
        for i, v in self.others:
            xs[i] = copy.deepcopy(v)
        return xs


@dataclasses.dataclass(frozen=True)
class _LayerLoss:
    """Σ forward(*inputs)[0] · dout: its gradient in each input is what backward(dout, cache) returns."""

    forward: _jit.Ref
    inputs: _Inputs
    jgc_wrapper = True

    def __call__(self, params, dout):
        out, _ = _split("forward", _validate.trace("forward", self.forward(), *self.inputs.assemble(params)), "(out, cache)")
        return (out * dout).sum()


@dataclasses.dataclass(frozen=True)
class _LayerGrad:
    """backward(dout, cache) at the same point, its outputs paired with the differentiated inputs in order."""

    forward: _jit.Ref
    backward: _jit.Ref
    inputs: _Inputs
    jgc_wrapper = True

    def __call__(self, params, dout):
        # named as the gradient's: inside it, what does not trace makes the gradient a host one
        out = _validate.trace("backward", self.forward(), *self.inputs.assemble(params))
        _, cache = _split("forward", out, "(out, cache)")
        grads = _validate.trace("backward", self.backward(), dout, cache)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        names = self.inputs.names
        if len(grads) != len(names):
            raise ValueError(
                f"backward returned {len(grads)} gradient(s); expected {len(names)}, one per floating-point "
                f"input of forward in order ({', '.join(names)})."
            )
        return dict(zip(names, grads, strict=True))


def _names(forward, n: int) -> list[str]:
    """forward's positional argument names (x, w, b), else x0, x1, …"""
    try:
        ps = [p for p in inspect.signature(forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        ps = []
    names = [p.name for p in ps[:n]]
    if len(names) < n or len(set(names)) < n:
        return [f"x{i}" for i in range(n)]
    return names


def _is_float_array(x) -> bool:
    return _tree.is_array(x) and not _tree.is_key(x) and jnp.issubdtype(x.dtype, jnp.floating)


def check_layer(
    forward: Callable,
    backward: Callable,
    *inputs,
    key: jax.Array | None = None,
    dout=None,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
    host: bool | None = None,
) -> LayerCheck:
    """Check a layer's hand-written backward pass in the CS231n convention, NumPy or JAX.

    `forward(*inputs) -> (out, cache)` and `backward(dout, cache) -> (dx, dw, db, …)` (one
    gradient per floating-point input, in order; a single array for one input). jgc draws the
    upstream gradient `dout ~ N(0, 1)` with `key` (shaped and typed like `out`) and checks
    `backward` as the gradient of Σ forward(*inputs)[0] · dout, coordinate by coordinate, on
    the one pipeline. Each floating-point input is a leaf of the report, named after forward's
    argument (`['x']`, `['w']`, …); the other inputs (a `conv_param` dict, `bn_param`) are
    passed unchanged, as fresh deep copies on each call. NumPy code runs on the host; float64
    NumPy inputs are checked in float64 (x64 for the call only).

    Args:
      forward: `(*inputs) -> (out, cache)`.
      backward: `(dout, cache) -> gradients`, a tuple (one per floating-point input) or one array.
      *inputs: the layer's inputs; none is mutated.
      key: PRNG key for `dout`.
      dout: the upstream gradient to use instead of drawing one.
      eps, tol, method, chunk_size, host: as in `jgc.check_grad` (`host`: for `forward`).

    Returns:
      A `jgc.LayerCheck` (a `GradCheck`; its leaves are the differentiated inputs).

    Examples:
      >>> import numpy as np, jax, jgc
      >>> def affine_forward(x, w, b):
      ...     return x @ w + b, (x, w)
      >>> def affine_backward(dout, cache):
      ...     x, w = cache
      ...     return dout @ w.T, x.T @ dout, dout.sum(axis=0)
      >>> x, w, b = np.ones((2, 3)), np.full((3, 4), 0.5), np.zeros(4)
      >>> res = jgc.check_layer(affine_forward, affine_backward, x, w, b, key=jax.random.key(0))
      >>> bool(res.passed)
      True
    """
    _validate_pair(("forward", forward), ("backward", backward), eps, tol, chunk_size)
    positions = tuple(i for i, x in enumerate(inputs) if _is_float_array(x))
    if not positions:
        got = ", ".join(_tree.dtype_name(x) for x in inputs) or "no inputs"
        raise TypeError(f"check_layer needs at least one floating-point array among forward's inputs; received {got}.")
    names = _names(forward, len(inputs))
    spec = _Inputs(
        positions,
        tuple(names[i] for i in positions),
        tuple((i, copy.deepcopy(x)) for i, x in enumerate(inputs) if i not in positions),
    )
    params = {names[i]: inputs[i] for i in positions}
    with _x64_for(params):
        if dout is None:
            if key is None:
                raise ValueError("check_layer draws the upstream gradient dout with key: pass key=jax.random.key(0) (or dout=).")
            _validate.key(key, where="check_layer")
            dout = _draw(forward, spec, params, key, host)
        elif not _tree.is_array(dout):
            raise TypeError(f"dout must be an array shaped like forward's output; received {type(dout).__name__}.")
        if _jit.is_traced(dout) or isinstance(dout, jax.Array):
            pass
        else:
            dout = np.array(dout, copy=True)
        loss = _LayerLoss(_jit.Ref(forward), spec)
        grad = _LayerGrad(_jit.Ref(forward), _jit.Ref(backward), spec)
        options = _pipeline.Options(method, chunk_size, result=LayerCheck, loss_name="forward", grad_name="backward")
        res = _check(loss, grad, params, (dout,), options, eps, tol, host)
    shape = tuple(np.shape(dout))
    return _host.with_notes(res, [f"the loss is Σ forward(…)[0] · dout, dout of shape {shape} drawn from N(0, 1)"])


def _draw(forward, spec: _Inputs, params, key, host):
    """dout ~ N(0, 1) shaped and typed like forward's output (its shape from a trace, or one host call)."""
    out = None
    traced = _jit.is_traced(params)
    if traced or host is not True and _host.traceable(lambda p: forward(*spec.assemble(p)), "forward", params):
        out = jax.eval_shape(lambda p: forward(*spec.assemble(p)), params)
        out = _split("forward", out, "(out, cache)")[0]
    else:
        out = _split("forward", forward(*spec.assemble(_host.host_copy(params))), "(out, cache)")[0]
    if not _tree.is_array(out) and not hasattr(out, "shape"):
        raise TypeError(f"forward must return (out, cache) with out an array; received out of type {type(out).__name__}.")
    dtype = np.dtype(out.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"forward's output must be floating point; received dtype {dtype.name}.")
    d = jax.random.normal(key, tuple(out.shape), dtype)
    return d if _jit.is_traced((params, key)) else np.asarray(jax.device_get(d))
