"""One jaxpr walker, and the static facts about a loss that the checks read from it.

`eqns(jaxpr)` yields every equation of a jaxpr and of the jaxprs nested in its equations
(`jit`, `custom_jvp_call`, `scan`, `cond`, …), depth first; `downstream(jaxpr, roots)` marks
the equations of one jaxpr that read `roots` directly or through earlier equations (partial
evaluation's split, the leaves a loss does not read, the facts below), and `variables(jaxpr)`
lists every variable it binds. `facts(jaxpr, roots)` reads what
a check needs to know before it measures anything, from the equations *downstream* of the
parameters (`roots`: the jaxpr inputs that carry θ; an equation with a nested jaxpr counts
as a whole, its body downstream when any of its inputs is):

- `conv`: a convolution is evaluated (the engine batches such losses with a loop on CPU);
- `smooth`: no downstream equation can make the loss non-differentiable in θ (max/min/abs,
  a select whose predicate depends on θ, rounding, a float→int cast, sorting, control flow
  on θ, callbacks). A smooth loss has no kinks, so a disagreement of its one-sided
  derivatives is evidence about the noise, never a kink;
- `lowest`: the least precise floating-point dtype a downstream equation computes in (a
  float32 loss that computes partly in bfloat16 rounds like bfloat16 there);
- `callback`: the loss calls back into Python (its precision cannot be read from the jaxpr);
- `random`, `shape`: whether the loss draws random numbers anywhere, and the sequence of its
  primitives (the program's structure whatever the dtypes): a float64 re-check evaluates the
  same function when the structure is the same and nothing random is drawn.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

# Primitives after which a loss may not be differentiable in their inputs (a kink, a jump).
NON_SMOOTH = frozenset(
    """max min abs sign clamp floor ceil round rem nextafter sort argmax argmin top_k reduce_max
    reduce_min reduce_precision cond while cummax cummin eigh svd lu qr schur
    pure_callback io_callback debug_callback callback""".split()
)
CALLBACKS = frozenset("pure_callback io_callback callback".split())

_BITS = {np.dtype(jnp.bfloat16): 8, np.dtype(jnp.float16): 11, np.dtype(np.float32): 24, np.dtype(np.float64): 53}


def subjaxprs(eqn):
    """The jaxprs nested in one equation's parameters."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def eqns(jaxpr):
    """Every equation of `jaxpr` and of its nested jaxprs, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in subjaxprs(eqn):
            yield from eqns(sub)


def downstream(jaxpr, roots) -> tuple[list[bool], set]:
    """Which equations of `jaxpr` (not of its nested jaxprs: an equation counts as a whole) read
    one of `roots` directly or through earlier equations, one bool per equation, and the set of
    variables that depend on `roots` (the roots included)."""
    dep = set(roots)
    marks = []
    for eqn in jaxpr.eqns:
        hit = any(isinstance(v, jcore.Var) and v in dep for v in eqn.invars)
        if hit:
            dep.update(eqn.outvars)
        marks.append(hit)
    return marks, dep


def variables(jaxpr) -> list:
    """Every variable `jaxpr` binds, in order: constants, inputs, outputs of its equations."""
    out = list(jaxpr.constvars) + list(jaxpr.invars)
    for eqn in jaxpr.eqns:
        out += [v for v in eqn.outvars if not isinstance(v, jcore.DropVar)]
    return out


RANDOM = frozenset("random_bits random_seed random_wrap random_unwrap random_fold_in random_split threefry2x32".split())


@dataclasses.dataclass(frozen=True)
class Facts:
    conv: bool = False
    smooth: bool = True
    lowest: str | None = None  # the least precise float dtype computed in downstream of θ
    callback: bool = False
    random: bool = False  # the loss draws random numbers (a dropout mask): their values may depend on x64
    shape: tuple = ()  # the primitives of every equation, in order: the program's structure, dtypes aside


def _dtype(v):
    return np.dtype(getattr(getattr(v, "aval", None), "dtype", np.int32))


def _kinky(eqn, dep) -> bool:
    """Whether this (downstream) equation may make the loss non-differentiable in θ."""
    name = eqn.primitive.name
    if name in NON_SMOOTH:
        return True
    if name == "select_n":  # a branch chosen by a predicate that moves with θ
        return isinstance(eqn.invars[0], jcore.Var) and eqn.invars[0] in dep
    if name == "convert_element_type":  # float → integer or bool, or a bool of θ → float (a step)
        src, dst = _dtype(eqn.invars[0]), np.dtype(eqn.params.get("new_dtype", np.float32))
        return (jnp.issubdtype(src, jnp.inexact) and not jnp.issubdtype(dst, jnp.inexact)) or (
            src == np.bool_ and jnp.issubdtype(dst, jnp.inexact)
        )
    return False


def _scan(jaxpr, roots, acc):
    marks, dep = downstream(jaxpr, roots)
    for eqn, hit in zip(jaxpr.eqns, marks, strict=True):
        if not hit:
            continue
        acc["conv"] |= eqn.primitive.name == "conv_general_dilated"
        acc["callback"] |= eqn.primitive.name in CALLBACKS
        acc["smooth"] &= not _kinky(eqn, dep)
        for v in eqn.outvars:
            bits = _BITS.get(_dtype(v))
            if bits is not None and bits < acc["bits"]:
                acc["bits"], acc["lowest"] = bits, _dtype(v).name
        for sub in subjaxprs(eqn):  # conservatively: the whole body is downstream
            _scan(sub, list(sub.invars) + list(sub.constvars), acc)


def facts(jaxpr, roots=None) -> Facts:
    """The facts of the equations downstream of `roots` (default: every input of `jaxpr`)."""
    acc = {"conv": False, "callback": False, "smooth": True, "bits": 99, "lowest": None}
    _scan(jaxpr, list(jaxpr.invars) if roots is None else list(roots), acc)
    names = tuple(e.primitive.name for e in eqns(jaxpr))
    # a convolution anywhere decides the batching, downstream or not
    conv = acc["conv"] or "conv_general_dilated" in names
    return Facts(conv, acc["smooth"], acc["lowest"], acc["callback"], bool(RANDOM & set(names)), names)


def same_program(a, b) -> bool:
    """Whether two traces of one function gave the same program: the same equations (literals
    included) and equal constants. A function that draws random numbers or reads changing state
    when it is traced (NumPy's global RNG, a counter) gives two programs."""
    ca, cb = list(a.consts), list(b.consts)
    if len(ca) != len(cb):
        return False
    for x, y in zip(ca, cb, strict=True):
        if x is y:
            continue
        try:
            if np.shape(x) != np.shape(y) or not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
                return False
        except (TypeError, ValueError):  # constants with no array form (PRNG keys): compared by identity
            return False
    return str(a.jaxpr) == str(b.jaxpr)


# ---------------------------------------------------------------- rounding from the terms' magnitudes

# Call-like equations whose body is evaluated in place, equation by equation: nested `jax.jit`,
# `jax.checkpoint`, and custom_jvp / custom_vjp functions (their primal function: the rules only
# say how to differentiate, and these evaluations only evaluate).
INLINE = frozenset(
    "jit pjit closed_call core_call custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr remat2 checkpoint".split()
)


def bind(eqn, invals, **override):
    """One equation evaluated with its primitive (under its context manager), `override` replacing
    some of its parameters; a list of outputs."""
    params = dict(eqn.primitive.get_bind_params(eqn.params), **override)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is not None:
        with ctx:
            out = eqn.primitive.bind(*invals, **params)
    else:
        out = eqn.primitive.bind(*invals, **params)
    return out if eqn.primitive.multiple_results else [out]


def callee(eqn):
    """(jaxpr, consts) that a call-like equation evaluates, or None (the equation stays whole)."""
    if eqn.primitive.name not in INLINE:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            jaxpr, consts = sub.jaxpr, sub.consts
        elif isinstance(sub, jcore.Jaxpr):
            jaxpr, consts = sub, ()
        else:
            continue
        if len(jaxpr.invars) == len(eqn.invars) and len(jaxpr.outvars) == len(eqn.outvars) and not jaxpr.effects:
            return jaxpr, consts
    return None


def read(env, v):
    """The value of a jaxpr variable or literal, from `env`."""
    return v.val if isinstance(v, jcore.Literal) else env[v]


def _instrumented(jaxpr, consts, args, dep, perturb):
    """Evaluate `jaxpr`, every float output downstream of θ (`dep`: the variables that are) passed
    through `perturb(value)`; call-like equations are evaluated body by body."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(env, v) for v in eqn.invars]
        hit = any(isinstance(v, jcore.Var) and v in dep for v in eqn.invars)
        body = callee(eqn)
        if body is not None and hit:
            inner = {iv for iv, v in zip(body[0].invars, eqn.invars, strict=True) if isinstance(v, jcore.Var) and v in dep}
            outs = _instrumented(body[0], body[1], invals, inner, perturb)
        else:
            outs = bind(eqn, invals)
            if hit:
                outs = [perturb(o) if jnp.issubdtype(jnp.result_type(o), jnp.inexact) else o for o in outs]
        if hit:
            dep.update(eqn.outvars)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(env, v) for v in jaxpr.outvars]


def term_scale(fun, theta, data):
    """max over the intermediates v of the loss downstream of θ of u_v·|v·∂J/∂v| (elementwise): what
    rounding a single intermediate (u_v: its dtype's unit roundoff) moves J by, to first order.

    A rounding level measured from a few noise tables can miss a term whose rounding is coarse
    (1 − q for a saturated sigmoid q: its relative error is u/(1 − q)); this bound from the terms'
    magnitudes cannot. One reverse pass through the loss: J with every intermediate v replaced by
    v·(1 + e_v), differentiated at e = 0, gives v·∂J/∂v.
    """
    closed = jax.make_jaxpr(fun)(theta, data)
    jaxpr = closed.jaxpr
    if any(e.primitive.name in CALLBACKS or e.primitive.name == "debug_callback" for e in eqns(jaxpr)):
        return jnp.zeros((), theta.dtype)  # what a callback computes cannot be differentiated here
    shapes = []

    def record(v):
        shapes.append(jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)))
        return v

    jax.eval_shape(
        lambda t, d: _instrumented(jaxpr, closed.consts, [t, *jax.tree_util.tree_leaves(d)], {jaxpr.invars[0]}, record),
        theta,
        data,
    )
    if not shapes:
        return jnp.zeros((), theta.dtype)

    def loss(es):
        it = iter(es)
        out = _instrumented(
            jaxpr, closed.consts, [theta, *jax.tree_util.tree_leaves(data)], {jaxpr.invars[0]}, lambda v: v * (1 + next(it))
        )
        return jnp.sum(jnp.real(out[0]))

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    try:
        grads = jax.grad(loss)(zeros)
    except (TypeError, ValueError, NotImplementedError):  # a primitive without a derivative rule
        return jnp.zeros((), theta.dtype)
    scales = [
        float(jnp.finfo(s.dtype).eps) / 2 * jnp.max(jnp.where(jnp.isfinite(g), jnp.abs(g), 0)).astype(theta.dtype)
        for g, s in zip(grads, shapes, strict=True)
        if g.size
    ]
    return jnp.max(jnp.stack(scales)) if scales else jnp.zeros((), theta.dtype)
