"""The split: the loss's jaxpr, which equations each checked leaf reaches, and the values at θ.

A one-hot probe of a checked leaf p leaves every other leaf and every argument alone, so
every equation of the loss's jaxpr that does not (transitively) read p computes the same
value for all of p's probes. `trace` traces the loss once with `jax.make_jaxpr` over the
checked leaves, marks per leaf the equations downstream of it (`_jaxpr.downstream`), and
picks each leaf's path (`_cost.choose`); `plan` is its paths alone. `base_values` evaluates
the whole jaxpr once at θ; `leaf_loss` is the loss of one leaf alone, evaluating only the
equations downstream of it and reading everything else from that evaluation.

Call-like equations (nested `jax.jit`, `jax.checkpoint`, `custom_jvp_call` such as
`jax.nn.relu`, `custom_vjp_call`) are inlined when the loss is traced (`eval_inlined`):
their bodies' equations are split like any other (a custom rule only says how to
differentiate; here the function is only evaluated). Equations with other sub-jaxprs
(`scan`, `while`, `cond`) stay whole: bound as they are, and downstream when any of their
inputs is. A loss with side effects is not inlined (its paths are all plain).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from .. import _jaxpr, _validate
from . import _cost
from ._box import bind

# Call-like equations whose body is evaluated in place (so that its equations can be split):
# nested `jax.jit`, `jax.checkpoint`, and custom_jvp / custom_vjp functions (their primal
# function: the rules only say how to differentiate, and partial evaluation only evaluates).
INLINE, read, callee = _jaxpr.INLINE, _jaxpr.read, _jaxpr.callee  # the one walker's


def eval_inlined(jaxpr, consts, args):
    """Evaluate a jaxpr, the bodies of call-like equations equation by equation (to be traced)."""
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        invals = [read(env, v) for v in eqn.invars]
        body = callee(eqn)
        outs = eval_inlined(*body, invals) if body is not None else bind(eqn, invals)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(env, v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True)
class Traced:
    closed: jcore.ClosedJaxpr
    paths: tuple[str, ...]  # per leaf of the params: PARTIAL, SPARSE, a plain reason, or "" (not checked)
    marks: tuple[tuple[bool, ...], ...]  # per checked leaf: which equations are downstream of it

    @functools.cached_property
    def sig(self) -> str:
        """What the per-leaf programs are compiled from: the jaxpr (literals included) and the
        shapes of its constants (the args' values, which are passed to the programs, not baked in)."""
        return str(self.closed.jaxpr) + repr([(jnp.shape(c), str(getattr(c, "dtype", type(c)))) for c in self.closed.consts])


def trace(loss_fn, lay, params, args, stencil) -> Traced:
    """The loss's jaxpr over the checked leaves (call-like equations inlined), each leaf's
    downstream equations and path."""
    leaves = jax.tree_util.tree_leaves(params)
    checked = [leaves[i] for i in lay.checked_index]

    def of_checked(*xs):
        new = list(leaves)
        for i, x in zip(lay.checked_index, xs, strict=True):
            new[i] = x
        return _validate.trace("loss_fn", loss_fn, jax.tree_util.tree_unflatten(lay.treedef, new), *args)

    closed = jax.make_jaxpr(of_checked)(*checked)
    if not closed.jaxpr.effects and any(callee(e) is not None for e in closed.jaxpr.eqns):
        outer = closed
        closed = jax.make_jaxpr(lambda *xs: eval_inlined(outer.jaxpr, outer.consts, xs))(*checked)
    jaxpr = closed.jaxpr
    total = _cost.jaxpr_cost(jaxpr)
    paths = [""] * len(lay.shapes)
    marks = []
    for k, i in enumerate(lay.checked_index):
        mark = tuple(_jaxpr.downstream(jaxpr, [jaxpr.invars[k]])[0])
        marks.append(mark)
        paths[i] = _cost.choose(jaxpr, k, mark, total, stencil, stencil.evals_per_probe * lay.sizes[k])
    return Traced(closed, tuple(paths), tuple(marks))


def plan(loss_fn, lay, params, args, stencil) -> tuple[str, ...]:
    """Per leaf of the params: "partial", "sparse", "plain: <reason>", or "" for a leaf not checked."""
    return trace(loss_fn, lay, params, args, stencil).paths


def base_values(traced: Traced, checked, consts=None) -> dict:
    """Every variable of the traced jaxpr at θ (`checked`: the checked leaves, in order; `consts`:
    the jaxpr's constants, the args' values, default those it was traced with)."""
    jaxpr = traced.closed.jaxpr
    base = dict(zip(jaxpr.constvars, traced.closed.consts if consts is None else consts, strict=True))
    base.update(zip(jaxpr.invars, checked, strict=True))
    for eqn in jaxpr.eqns:
        base.update(zip(eqn.outvars, bind(eqn, [read(base, v) for v in eqn.invars]), strict=True))
    return base


def leaf_loss(traced: Traced, base, k):
    """J of checked leaf k's flat values (in θ's dtype; the other leaves and args at θ, read from
    `base`): the equations downstream of the leaf only."""
    jaxpr = traced.closed.jaxpr
    eqns = [e for e, m in zip(jaxpr.eqns, traced.marks[k], strict=True) if m]
    invar, outvar = jaxpr.invars[k], jaxpr.outvars[0]
    shape, dtype = invar.aval.shape, invar.aval.dtype

    def loss(theta_p):
        env = {invar: theta_p.reshape(shape).astype(dtype)}
        value = lambda v: v.val if isinstance(v, jcore.Literal) else env[v] if v in env else base[v]  # noqa: E731
        for eqn in eqns:
            env.update(zip(eqn.outvars, bind(eqn, [value(v) for v in eqn.invars]), strict=True))
        return value(outvar)

    return loss
