"""Partial evaluation per leaf: what a leaf's probes do not change is computed once.

A one-hot probe of a checked leaf p leaves every other leaf and every argument alone,
so every equation of the loss's jaxpr that does not (transitively) read p computes the
same value for all of p's probes. `trace` traces the loss once with `jax.make_jaxpr`;
`Base` evaluates the whole jaxpr once at θ; for each leaf p, `LeafFun` is a loss of p alone
that evaluates only the equations downstream of p and reads everything else from that one
evaluation, and the measuring session (`jgc/_measure.py`) runs it on the one engine with p's
coordinate probes. Probes, steps, stencil and chunk size are the plain engine's, so the
numbers are the plain engine's up to floating-point rounding (XLA fuses and orders a
smaller program differently). Where it is cheaper, a leaf takes the *sparse* path instead
(`EntryFun`): the probe's one changed entry is propagated through the downstream equations
as a box of changed entries (`jgc/_sparse.py`), recomputing only what changed.

Per leaf, a caller can also use the pieces on their own: `trace` (the jaxpr, paths and
which equations are downstream of each leaf), `base_values` (every variable at θ), and
from them `leaf_loss` (J of one leaf's flat values) and `entry_loss` (J of one entry's
multi-index and new value).

Call-like equations (nested `jax.jit`, `jax.checkpoint`, `custom_jvp_call` such as
`jax.nn.relu`, `custom_vjp_call`) are inlined when the loss is traced: their bodies'
equations are split like any other (a custom rule only says how to differentiate; here the
function is only evaluated). Equations with other sub-jaxprs (`scan`, `while`, `cond`)
stay whole: bound as they are, and downstream when any of their inputs is. A leaf takes
the plain engine (the whole loss per probe) when

- the loss has side effects (callbacks, debug prints): hoisting would change how often
  they run, so the whole loss is left to the plain engine;
- the stencil's offsets are not real numbers (a complex step needs the whole loss);
- neither path saves `MIN_SAVING` of the estimated cost of the plain one.

Costs are estimated from the jaxprs (flops of `dot_general` and convolutions, one per
output element otherwise): the loss's, the downstream equations', and the jaxpr the
sparse evaluation of one probe traces to.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from . import _jit, _sparse, _tree, _validate

# A leaf takes the partial path when the equations it does not reach are at least this
# fraction of the loss's estimated cost (otherwise the plain engine does the same work).
MIN_SAVING = 0.1

# A leaf leaves the plain engine only when its evaluations save this many estimated flops:
# its own program has to be compiled (~0.1–0.5 s), which at ~1 GFLOP/s on a CPU core
# pays off from a few 1e8 flops on.
MIN_FLOPS_SAVED = 3e8

# Tests set this to PARTIAL or SPARSE to send every leaf (without side effects) down one path.
FORCE: str | None = None

PARTIAL = "partial"
SPARSE = "sparse"
PLAIN_EFFECTS = "plain: side effects"
PLAIN_LITTLE = "plain: little to hoist"
PLAIN_STENCIL = "plain: stencil"  # offsets that are not real multiples of h (a complex step)
PLAIN_TRACED = "plain: traced"  # inside the caller's jit/vmap: one program, the whole loss per probe


# ---------------------------------------------------------------- cost model


def _size(aval) -> int:
    return int(np.prod(getattr(aval, "shape", ()), dtype=int))


def _subjaxprs(eqn):
    for value in eqn.params.values():
        items = value if isinstance(value, (tuple, list)) else (value,)
        for item in items:
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def _eqn_cost(eqn) -> float:
    """Rough cost of one equation in flops (elementwise: one per output element)."""
    out = sum(_size(v.aval) for v in eqn.outvars)
    name = eqn.primitive.name
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * out * math.prod(lhs[d] for d in lhs_contract)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2.0 * out * math.prod(rhs) / max(1, out_features)
    inner = sum(_jaxpr_cost(j) for j in _subjaxprs(eqn))
    if inner:
        return inner * eqn.params.get("length", 1) + out
    return float(out)


def _jaxpr_cost(jaxpr) -> float:
    return sum(_eqn_cost(e) for e in jaxpr.eqns)


# ---------------------------------------------------------------- the split


def _downstream(jaxpr, invar) -> list[bool]:
    """For each equation, whether it reads `invar` directly or through earlier equations."""
    dep = {invar}
    marks = []
    for eqn in jaxpr.eqns:
        hit = any(isinstance(v, jcore.Var) and v in dep for v in eqn.invars)
        if hit:
            dep.update(eqn.outvars)
        marks.append(hit)
    return marks


_bind = _sparse._bind  # one equation, evaluated with its primitive (under its context manager)


def _read(env, v):
    return v.val if isinstance(v, jcore.Literal) else env[v]


@dataclasses.dataclass(frozen=True)
class _Traced:
    closed: jcore.ClosedJaxpr
    paths: tuple[str, ...]  # per leaf of the params: PARTIAL, SPARSE, a plain reason, or "" (not checked)
    marks: tuple[tuple[bool, ...], ...]  # per checked leaf: which equations are downstream of it

    @functools.cached_property
    def sig(self) -> str:
        """What the per-leaf programs are compiled from: the jaxpr (literals included) and the
        shapes of its constants (the args' values, which are passed to the programs, not baked in)."""
        return str(self.closed.jaxpr) + repr([(jnp.shape(c), str(getattr(c, "dtype", type(c)))) for c in self.closed.consts])


def _all_vars(jaxpr):
    out = list(jaxpr.constvars) + list(jaxpr.invars)
    for eqn in jaxpr.eqns:
        out += [v for v in eqn.outvars if not isinstance(v, jcore.DropVar)]
    return out


def _sparse_loss(jaxpr, k, mark):
    """J of (probe multi-index, new entry value, list of base values in `_all_vars` order)."""
    eqns = [e for e, m in zip(jaxpr.eqns, mark, strict=True) if m]
    run = _sparse.point_loss(jaxpr, eqns, jaxpr.invars[k])
    names = _all_vars(jaxpr)
    return lambda idx, value, base: run(idx, value, dict(zip(names, base, strict=True)))


def _sparse_cost(jaxpr, k, mark) -> float:
    """Estimated cost of one sparse evaluation, from the jaxpr it traces to (shapes only)."""
    aval = jaxpr.invars[k].aval
    idx = [jax.ShapeDtypeStruct((), jnp.int32)] * aval.ndim
    value = jax.ShapeDtypeStruct((), aval.dtype)
    base = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in _all_vars(jaxpr)]
    return _jaxpr_cost(jax.make_jaxpr(_sparse_loss(jaxpr, k, mark))(idx, value, base).jaxpr)


def _choose(jaxpr, k, mark, total, stencil, evals) -> str:
    if jaxpr.effects:
        return PLAIN_EFFECTS
    if not all(isinstance(o, (int, float)) for o in stencil.offsets):
        return PLAIN_STENCIL
    if FORCE is not None:
        return FORCE
    if evals * total < MIN_FLOPS_SAVED:  # even skipping the whole loss would not pay for a compile
        return PLAIN_LITTLE
    keep = 1 - MIN_SAVING
    kept = sum(_eqn_cost(e) for e, m in zip(jaxpr.eqns, mark, strict=True) if m)
    path, cost = (PARTIAL, kept) if total > 0 and kept <= keep * total else (PLAIN_LITTLE, total)
    if evals * (total - cost) < MIN_FLOPS_SAVED:  # not enough work saved to pay for a compile
        path, cost = PLAIN_LITTLE, total
    if any(mark) and all(jaxpr.invars[k].aval.shape):  # a leaf of size 0 has no entry to change
        sparse = _sparse_cost(jaxpr, k, mark)
        if sparse <= keep * cost and evals * (total - sparse) >= MIN_FLOPS_SAVED:
            path = SPARSE
    return path


# Call-like equations whose body is evaluated in place (so that its equations can be split):
# nested `jax.jit`, `jax.checkpoint`, and custom_jvp / custom_vjp functions (their primal
# function: the rules only say how to differentiate, and partial evaluation only evaluates).
INLINE = frozenset(
    "jit pjit closed_call core_call custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr remat2 checkpoint".split()
)


def _callee(eqn):
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


def _eval_inlined(jaxpr, consts, args):
    """Evaluate a jaxpr, the bodies of call-like equations equation by equation (to be traced)."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [_read(env, v) for v in eqn.invars]
        callee = _callee(eqn)
        outs = _eval_inlined(*callee, invals) if callee is not None else _bind(eqn, invals)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [_read(env, v) for v in jaxpr.outvars]


def trace(loss_fn, lay, params, args, stencil) -> _Traced:
    leaves = jax.tree_util.tree_leaves(params)
    checked = [leaves[i] for i in lay.checked_index]

    def of_checked(*xs):
        new = list(leaves)
        for i, x in zip(lay.checked_index, xs, strict=True):
            new[i] = x
        return _validate.trace("loss_fn", loss_fn, jax.tree_util.tree_unflatten(lay.treedef, new), *args)

    closed = jax.make_jaxpr(of_checked)(*checked)
    if not closed.jaxpr.effects and any(_callee(e) is not None for e in closed.jaxpr.eqns):
        outer = closed
        closed = jax.make_jaxpr(lambda *xs: _eval_inlined(outer.jaxpr, outer.consts, xs))(*checked)
    jaxpr = closed.jaxpr
    total = _jaxpr_cost(jaxpr)
    paths = [""] * len(lay.shapes)
    marks = []
    for k, i in enumerate(lay.checked_index):
        mark = tuple(_downstream(jaxpr, jaxpr.invars[k]))
        marks.append(mark)
        paths[i] = _choose(jaxpr, k, mark, total, stencil, stencil.evals_per_probe * lay.sizes[k])
    return _Traced(closed, tuple(paths), tuple(marks))


def base_values(traced: _Traced, checked, consts=None) -> dict:
    """Every variable of the traced jaxpr at θ (`checked`: the checked leaves, in order; `consts`:
    the jaxpr's constants, the args' values, default those it was traced with)."""
    jaxpr = traced.closed.jaxpr
    base = dict(zip(jaxpr.constvars, traced.closed.consts if consts is None else consts, strict=True))
    base.update(zip(jaxpr.invars, checked, strict=True))
    for eqn in jaxpr.eqns:
        base.update(zip(eqn.outvars, _bind(eqn, [_read(base, v) for v in eqn.invars]), strict=True))
    return base


def leaf_loss(traced: _Traced, base, k):
    """J of checked leaf k's flat values (the other leaves and args at θ): downstream equations only."""
    jaxpr = traced.closed.jaxpr
    aval = jaxpr.invars[k].aval
    return _leaf_loss(jaxpr, base, k, traced.marks[k], aval.shape, aval.dtype)


def entry_loss(traced: _Traced, base, k):
    """J of (multi-index, new value) of one entry of checked leaf k, the rest at θ: sparse propagation."""
    jaxpr = traced.closed.jaxpr
    run = _sparse_loss(jaxpr, k, traced.marks[k])
    values = [base[v] for v in _all_vars(jaxpr)]
    return lambda idx, value: run(idx, value, values)


def plan(loss_fn, lay, params, args, stencil) -> tuple[str, ...]:
    """Per leaf of the params: "partial", "sparse", "plain: <reason>", or "" for a leaf not checked."""
    return trace(loss_fn, lay, params, args, stencil).paths


# ---------------------------------------------------------------- programs for the engine


@dataclasses.dataclass(frozen=True)
class Base:
    """Every variable of the traced jaxpr at θ, in `_all_vars` order (one program per loss)."""

    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    sig: str  # the traced jaxpr: a program compiled for one is never reused for another
    traced: _Traced = dataclasses.field(compare=False, hash=False)

    def __call__(self, theta, dynamic, consts):
        params, _ = _jit.combine(dynamic, self.static)
        p = _tree.unravel(self.lay, theta, params)
        leaves = self.lay.treedef.flatten_up_to(p)
        base = base_values(self.traced, [leaves[i] for i in self.lay.checked_index], consts)
        return [base[v] for v in _all_vars(self.traced.closed.jaxpr)]


@dataclasses.dataclass(frozen=True)
class LeafFun:
    """J of checked leaf k's flat values (the engine's function for a leaf on the partial path)."""

    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    k: int
    sig: str
    traced: _Traced = dataclasses.field(compare=False, hash=False)

    def __call__(self, theta_k, base_list):
        jaxpr = self.traced.closed.jaxpr
        base = dict(zip(_all_vars(jaxpr), base_list, strict=True))
        out = _validate.loss_output(leaf_loss(self.traced, base, self.k)(theta_k))  # a constant: a Literal's value
        return jnp.real(out).astype(theta_k.dtype)


@dataclasses.dataclass(frozen=True)
class EntryFun:
    """J of (multi-index, new value) of one entry of checked leaf k (the sparse path)."""

    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    k: int
    sig: str
    traced: _Traced = dataclasses.field(compare=False, hash=False)

    def __call__(self, idx, value, base_list):
        jaxpr = self.traced.closed.jaxpr
        run = _sparse_loss(jaxpr, self.k, self.traced.marks[self.k])
        return jnp.real(run(idx, value, list(base_list)))


def _leaf_loss(jaxpr, base, k, mark, shape, dtype):
    """J as a function of checked leaf k alone (flat, in θ's dtype), the rest read from `base`."""
    eqns = [e for e, m in zip(jaxpr.eqns, mark, strict=True) if m]
    invar, outvar = jaxpr.invars[k], jaxpr.outvars[0]

    def leaf_loss(theta_p):
        env = {invar: theta_p.reshape(shape).astype(dtype)}
        read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v] if v in env else base[v]  # noqa: E731
        for eqn in eqns:
            env.update(zip(eqn.outvars, _bind(eqn, [read(v) for v in eqn.invars]), strict=True))
        return read(outvar)

    return leaf_loss
