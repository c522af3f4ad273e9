"""One setup for every check: θ, the function of θ the engine evaluates, stencil, tol, and
the analytic side, on the host (compiled programs) or inside the caller's trace.

`Problem` holds what a check starts from: the layout of the params, θ, the dynamic and
static parts of (params, args), the stencil and the tolerance. `Fun` is the function of θ
the engine differentiates (the loss, a layer's output, a gradient) as a hashable value, so
the chunk program compiled for it can be cached on it; `Gradient` is the analytic side of
a gradient check (the hand-written gradient, J(θ) from a second trace for the determinism
check, and `jax.grad` for the autodiff cross-check). On concrete inputs each is a compiled
program; under a trace they are called inline.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from . import _engine, _host, _jaxpr, _jit, _stencils, _tree, _validate
from ._typing import PyTree

LOSS, OUTPUT, GRADIENT, AUTOGRAD = "loss", "output", "gradient", "autograd"

_COMPLEX_MSG = (
    "method='complex_step' evaluates loss_fn at complex parameters θ + i·h·e_j, {problem} "
    "Use a loss written with complex-safe operations (no .astype to a real dtype, no "
    "jnp.real/jnp.abs on the parameters' path), or another method: method='central' "
    "(the default) or method='five_point'."
)

_HOST_GRAD_TRACED = (
    " grad_fn is called on the host, outside jit, only when the inputs are concrete; inside "
    "jax.jit/jax.vmap it must be written with jax.numpy"
)


@dataclasses.dataclass(frozen=True)
class Fun:
    """The function of θ the engine evaluates: hashable (the user function by `Ref`)."""

    kind: str  # LOSS (scalar), OUTPUT (a layer's output), GRADIENT (grad_fn's), AUTOGRAD (jax.grad of the loss); raveled
    ref: _jit.Ref
    lay: _tree.Layout
    static: tuple
    out_lay: _tree.Layout | None = None  # the raveled output's layout (OUTPUT, GRADIENT)
    name: str = "loss_fn"

    def __call__(self, theta, dynamic):
        params, args = _jit.combine(dynamic, self.static)
        fn = self.ref()
        if self.kind == LOSS:
            p = _tree.unravel(self.lay, theta, params, keep_complex=True)
            if jnp.iscomplexobj(theta):
                try:
                    out = _validate.trace(self.name, fn, p, *args)
                except (TypeError, ValueError) as e:  # any failure: the loss is not complex-safe
                    e = e.__cause__ if isinstance(e, _validate.CallError) and e.__cause__ is not None else e
                    first = str(e).splitlines()[0][:300] if str(e) else ""
                    raise TypeError(_COMPLEX_MSG.format(problem=f"but loss_fn raised {type(e).__name__}: {first}")) from e
            else:
                out = _validate.trace(self.name, fn, p, *args)
            out = _validate.loss_output(out, self.name, complex_params=jnp.iscomplexobj(theta))
            if jnp.iscomplexobj(theta) and not jnp.iscomplexobj(out):
                raise TypeError(
                    _COMPLEX_MSG.format(
                        problem=f"but loss_fn returned a real {jnp.dtype(out.dtype).name} for complex parameters, "
                        "so the imaginary part that carries the derivative was dropped."
                    )
                )
            return out if jnp.iscomplexobj(theta) else jnp.real(out).astype(theta.dtype)
        if self.kind == AUTOGRAD:

            def loss(t):
                out = _validate.trace(self.name, fn, _tree.unravel(self.lay, t, params), *args)
                return _validate.loss_output(out, self.name)

            return jax.grad(loss)(theta)
        p = _tree.unravel(self.lay, theta, params)
        if self.kind == OUTPUT:
            out = _validate.trace(self.name, fn, *p)
        else:
            out = _validate.trace(self.name, fn, p, *args)
            _validate.like_params(self.lay, out, self.name)
        assert self.out_lay is not None
        return _tree.ravel(self.out_lay, out).astype(theta.dtype)


@dataclasses.dataclass(frozen=True)
class Gradient:
    """The analytic side of a gradient check, as one program of (θ, dynamic).

    Returns (analytic gradient (n,) or None, `jax.grad` (n,) or None, the loss's term scale or
    None): the hand-written gradient when `grad` is set, `jax.grad` of the loss when it is None
    or `autodiff` asks for the cross-check (`auto_only`: `jax.grad` alone, beside a host-side
    grad_fn); with `scale`, what rounding one intermediate can move J by (`_jaxpr.term_scale`).
    """

    grad: _jit.Ref | None  # grad_fn; None: jax.grad of the loss
    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    autodiff: bool = False
    auto_only: bool = False
    grad_name: str = "grad_fn"
    loss_name: str = "loss_fn"
    scale: bool = False

    def __call__(self, theta, dynamic):
        params, args = _jit.combine(dynamic, self.static)

        def loss(t):
            out = _validate.trace(self.loss_name, self.loss(), _tree.unravel(self.lay, t, params), *args)
            out = _validate.loss_output(out, self.loss_name)
            return jnp.real(out).astype(theta.dtype)

        auto = jax.grad(loss)(theta) if self.grad is None or self.autodiff else None
        scale = (
            _jaxpr.term_scale(Fun(LOSS, self.loss, self.lay, self.static, None, self.loss_name), theta, dynamic)
            if self.scale
            else None
        )
        if self.grad is None or self.auto_only:
            return (auto if self.grad is None else None), (auto if self.autodiff else None), scale
        grad = _validate.trace(self.grad_name, self.grad(), _tree.unravel(self.lay, theta, params), *args)
        _validate.like_params(self.lay, grad, self.grad_name)
        return _tree.ravel(self.lay, grad).astype(theta.dtype), auto, scale


class Problem:
    """What a check starts from (validated inputs → θ, data, stencil, tol)."""

    def __init__(self, fn, params: PyTree, args: tuple, method: str, tol=None, *, kind: str = LOSS, name: str = "loss_fn"):
        _validate.live_inputs(params, args, ("primals", "args") if kind == OUTPUT else ("params", "args"))
        self.lay = lay = _tree.layout(params)
        self.params, self.args = params, args
        dynamic, self.static = _jit.partition((params, args))
        self.traced = _jit.is_traced(dynamic)
        self.xp = jnp if self.traced else np
        # the checked leaves travel as θ: the data keeps the other arrays only
        self.data = [None if i in set(lay.checked_index) else x for i, x in enumerate(dynamic)]
        self.dtype = np.dtype(lay.dtype)
        if self.traced:
            self.theta = self.theta_x = _tree.ravel(lay, params)
        else:  # built on the host (NumPy): no eager JAX op, so nothing compiles for a new shape
            self.data = _engine.place(self.data)
            leaves = _engine.to_host(lay.treedef.flatten_up_to(params), "the params to the host")
            self.theta_x = np.concatenate([np.ravel(np.asarray(leaves[i])).astype(self.dtype) for i in lay.checked_index])
            self.theta = _engine.to_device(self.theta_x, "θ to the device")
        self.stencil = _stencils.get(method)
        self.method = method
        self.tol = tol
        self.tol_given = tol is not None
        self.fn, self.kind, self.name = fn, kind, name
        self.host_notes: list[str] = []  # what the host side did (a NumPy gradient cast, keys ignored)
        self.out_lay = None if kind == LOSS else self._out_layout()
        self.fun = Fun(kind, _jit.Ref(fn), lay, self.static, self.out_lay, name)

    # -------------------------------------------------------------- leaves the loss does not read

    def unread(self) -> np.ndarray:
        """Per checked leaf (k,): the loss has no data dependence on it (a constant loss, an unused
        parameter), so each of its directional derivatives is exactly 0. From the loss's jaxpr (shapes
        only); a loss with side effects is taken to read everything."""
        lay = self.lay
        leaves = lay.treedef.flatten_up_to(self.params)

        def of_checked(*xs):
            new = list(leaves)
            for i, x in zip(lay.checked_index, xs, strict=True):
                new[i] = x
            return self.fn(jax.tree_util.tree_unflatten(lay.treedef, new), *self.args)

        specs = [jax.ShapeDtypeStruct(lay.shapes[i], lay.dtypes[i]) for i in lay.checked_index]
        jaxpr = jax.make_jaxpr(of_checked)(*specs).jaxpr
        if jaxpr.effects:
            return np.zeros(lay.k, bool)
        out = jaxpr.outvars[0]
        unread = []
        for invar in jaxpr.invars:  # sub-jaxprs are taken whole: an equation that reads the leaf reads it
            _, dep = _jaxpr.downstream(jaxpr, [invar])
            unread.append(not (isinstance(out, jcore.Var) and out in dep))
        return np.asarray(unread, bool)

    def exact_zeros(self, start, numeric):
        """Probes (by first coordinate `start`) whose numeric value is exactly 0 on a leaf the loss does
        not read: their derivative is 0 with no finite-difference error (bound 0). None when no probe
        is such (on the host the loss is traced for it only when some leaf's values are all 0)."""
        if self.kind != LOSS:
            return None
        seg = self.lay.segments
        if not self.traced:
            zero = np.asarray(numeric) == 0
            leaf = seg[np.asarray(start)]
            if not any(zero[leaf == g].all() for g in np.unique(leaf)):
                return None
        unread = self.unread()
        if not unread.any():
            return None
        if self.traced:
            return jnp.asarray(unread)[jnp.asarray(seg)[start]] & (numeric == 0)
        return unread[seg[np.asarray(start)]] & (numeric == 0)

    def _out_layout(self) -> _tree.Layout:
        params = self.params
        if self.kind == AUTOGRAD:
            return self.lay
        if self.kind == OUTPUT:
            out = jax.eval_shape(lambda: _validate.trace(self.name, self.fn, *params))
            _validate.float_outputs(out, self.name)
        else:
            out = jax.eval_shape(lambda: _validate.trace(self.name, self.fn, params, *self.args))
            _validate.like_params(self.lay, out, self.name)
        shapes = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), out)  # layout reads shapes only
        return _tree.layout(shapes, name=f"the output of {self.name}")

    # -------------------------------------------------------------- programs

    def runner(self, plan: _engine.Plan, key=None, project=None, label: str = "") -> _engine.Runner:
        body = _engine.chunk_function(self.fun, plan)
        program = body if self.traced else _jit.program(("chunk", self.fun, plan), body)
        repeat = _host.REPEAT_PROBES if isinstance(self.fn, _host.HostLoss) else None
        return _engine.Runner(program, plan, self.theta, self.data, key, project, self.traced, label, repeat)

    def call(self, key, fn: Callable, *args):
        """`fn(θ, data, *args)`: compiled and cached on `key` on the host, inline under a trace."""
        if self.traced:
            return fn(self.theta, self.data, *args)
        out = _jit.program(key, fn)(self.theta, self.data, *_engine.to_device(args))
        # host values: no eager JAX op (and compile) on them; PRNG keys (a dropout key in the base
        # values of partial evaluation) have no NumPy form and stay device arrays
        return _engine.to_host(out)

    def gradient(self, grad_fn, autodiff: bool = False, grad_name: str = "grad_fn", scale: bool = False):
        """(analytic (n,), autodiff (n,) or None, whether grad_fn ran on the host, the loss's term
        scale where `scale` asks, else None), in one program.

        A `grad_fn` that cannot be traced (a NumPy backward pass) runs on the host when the
        inputs are concrete; the report says so.
        """
        self.grad_fn, self.grad_name = grad_fn, grad_name
        grad = None if grad_fn is None else _jit.Ref(grad_fn)
        spec = Gradient(
            grad, self.fun.ref, self.lay, self.static, autodiff=autodiff, grad_name=grad_name, loss_name=self.name, scale=scale
        )
        try:
            analytic, auto, term = self.call(("gradient", spec), spec)
            return analytic, auto, False, term
        except (_validate.Untraceable, _validate.CallError) as e:
            if grad_fn is None or not _host.refused(e, grad_name, (self.params, self.args)):
                raise
            if self.traced:
                raise _validate.untraceable(grad_name, e.__cause__ or e, _HOST_GRAD_TRACED) from None
        # the NumPy backward pass: called on the host with NumPy copies of the inputs; its result matched
        # to the params by name, cast to their dtype (both said in the report)
        params, args = _host.host_copy((self.params, self.args))
        analytic, self.host_notes = _host.host_gradient(self.lay, self.params, grad_fn(params, *args), grad_name)
        self.host_notes = [
            f"{grad_name} ran on the host (it cannot be traced: NumPy), with NumPy copies of its inputs",
            *self.host_notes,
        ]
        rest = dataclasses.replace(spec, auto_only=True)
        _, auto, term = self.call(("gradient", rest), rest)
        return analytic, auto, True, term

    def term_scale(self):
        """The term scale alone (`_jaxpr.term_scale`), where the gradient's program went without it."""
        return self.call(("term scale", self.fun), functools.partial(_jaxpr.term_scale, self.fun))
