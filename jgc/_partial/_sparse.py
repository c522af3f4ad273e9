"""The sparse path: one changed entry of a leaf, propagated through the equations downstream of it.

A one-hot probe changes one entry of one leaf. `point_loss` evaluates the equations
downstream of the leaf on boxes (`_box.py`: per axis the whole axis or a window, the values
inside stored, everything outside equal to θ's), starting from a box of one entry at the
probe's multi-index. Each equation whose primitive has a rule and which reads a changed
value goes through its rule; an equation without a rule, or whose rule returns `None`,
is evaluated densely (its operands: the values at θ with the boxes written in).

Exact by construction. Every rule computes the output entries inside the box it returns
with the equation's own primitive (or an exact select between values), on operand regions
that contain every entry those outputs read, and returns a box that contains every output
entry that can differ from θ's. A rule that cannot show this for an equation (a shape it
does not recognise, a changed index operand, two changed operands where it handles one)
returns `None`. Shapes are read from the jaxpr, never assumed.

The rules, by family: `_elementwise.py`, `_shapes.py`, `_indexing.py`, `_reductions.py`,
`_contractions.py` (each a `RULES` table from primitive name to rule). Results equal dense
recomputation up to rounding: a recomputed box sums the same terms (possibly in another
order), and a low-rank or reduced update rounds out + Δ instead of recomputing out (which
also makes an infinite value of θ's evaluation turn into NaN where dense evaluation would
keep it infinite).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.extend import core as jcore

from .. import _jaxpr
from . import _contractions, _elementwise, _indexing, _reductions, _shapes
from ._box import Run, bind, boxed, i32

FAMILIES = (_elementwise, _shapes, _indexing, _reductions, _contractions)
RULES = {name: f for family in FAMILIES for name, f in family.RULES.items()}


def rule(name):
    """The sparse rule of a primitive, or None (dense evaluation)."""
    return RULES.get(name)


def point_loss(jaxpr, eqns, invar):
    """J as a function of (probe multi-index, new value of that entry of the leaf, base values).

    `eqns` are the equations downstream of `invar` (the leaf); `base` maps every other
    variable of `jaxpr` to its value at θ.
    """
    outvar = jaxpr.outvars[0]

    def run_loss(idx, value, base):
        run = Run(base)
        shape = invar.aval.shape
        start = jnp.asarray(value, invar.aval.dtype).reshape((1,) * len(shape))
        env = {invar: boxed([i32(i) for i in idx], start) if shape else start.reshape(())}
        rep = lambda v: env.get(v) if isinstance(v, jcore.Var) else None  # noqa: E731
        for eqn in eqns:
            reps = [rep(v) for v in eqn.invars]
            f = rule(eqn.primitive.name)
            out = f(run, eqn, reps) if f is not None and any(r is not None for r in reps) else None
            if out is None:
                out = bind(eqn, [run.dense(v, r) for v, r in zip(eqn.invars, reps, strict=True)])
            env.update(zip(eqn.outvars, out, strict=True))
        return run.dense(outvar, rep(outvar))

    return run_loss


def sparse_loss(jaxpr, k, mark):
    """J of (probe multi-index, new entry value, list of base values in `_jaxpr.variables` order)
    for an entry of input k of `jaxpr`; `mark`: which equations are downstream of it."""
    eqns = [e for e, m in zip(jaxpr.eqns, mark, strict=True) if m]
    run = point_loss(jaxpr, eqns, jaxpr.invars[k])
    names = _jaxpr.variables(jaxpr)
    return lambda idx, value, base: run(idx, value, dict(zip(names, base, strict=True)))
