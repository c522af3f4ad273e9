"""Propagate only the change: one changed entry of a leaf, through the equations downstream of it.

A one-hot probe changes one entry of one leaf. `point_loss` evaluates the equations
downstream of the leaf on a description of how little of each value changed:

- a *point*: one entry (at the probe's index) of a value shaped like the leaf;
- a *slab*: one index along one axis (`axis`), the index being component `comp` of the
  probe's multi-index; only the slab (the value's shape with 1 on `axis`) is stored;
- a dense array: everything may have changed;
- `None`: unchanged (the value at θ, read from the base evaluation).

Rules (each recomputes the changed entries with the equation's own primitive):

- elementwise primitives: a point stays a point, slabs on the same axis stay a slab;
  unchanged operands are sliced to match;
- `dot_general`: a slab along a free or batch dimension gives a slab of the output
  (the product of the slab with the other operand); a slab along a contracted
  dimension gives a dense output by a rank-one update, out + (new − old)·other[index];
- `broadcast_in_dim`, `transpose`: the slab moves to its new axis;
- `reduce_sum`: a slab along a kept axis stays a slab; along a reduced axis the output
  is updated densely, out + Σ(new − old).

Every other equation (and any case a rule does not cover) gets dense operands (the
base value with the slab or point written in) and is evaluated as it is. Results
equal dense recomputation up to rounding: a slab's entries are the same sums,
possibly in another order; a rank-one or reduced update rounds (out + Δ) instead of
recomputing out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

# Primitives applied entry by entry (operands of one shape, or rank-0 literals).
ELEMENTWISE = frozenset(
    """abs acos acosh add asin asinh atan atan2 atanh cbrt ceil convert_element_type cos cosh
    div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow is_finite le lgamma digamma
    log log1p logistic lt max min mul ne neg nextafter pow rem round rsqrt select_n sign sin
    sinh sqrt square sub tan tanh""".split()
)


@dataclasses.dataclass(frozen=True)
class Point:
    value: Any  # the changed entry (a scalar); its index is the probe's multi-index


@dataclasses.dataclass(frozen=True)
class Slab:
    axis: int  # the axis along which one index changed
    comp: int  # which component of the probe's multi-index that index is
    new: Any  # the changed slab: the value's shape with 1 on `axis`


def _bind(eqn, invals, **override):
    params = dict(eqn.primitive.get_bind_params(eqn.params), **override)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is not None:
        with ctx:
            out = eqn.primitive.bind(*invals, **params)
    else:
        out = eqn.primitive.bind(*invals, **params)
    return out if eqn.primitive.multiple_results else [out]


class _Run:
    """One evaluation of the downstream equations for the probe at multi-index `idx`."""

    def __init__(self, base, idx):
        self.base, self.idx = base, idx

    def value(self, v):
        return v.val if isinstance(v, jcore.Literal) else self.base[v]

    def old(self, v, axis, comp):
        return lax.dynamic_slice_in_dim(self.value(v), self.idx[comp], 1, axis)

    def dense(self, v, r):
        if r is None:
            return self.value(v)
        if isinstance(r, Slab):
            return lax.dynamic_update_slice_in_dim(self.value(v), r.new, self.idx[r.comp], r.axis)
        if isinstance(r, Point):
            base = self.value(v)
            if base.ndim == 0:
                return r.value.astype(base.dtype)
            return lax.dynamic_update_slice(base, r.value.astype(base.dtype).reshape((1,) * base.ndim), self.idx)
        return r

    def slab(self, v, r, axis):
        """A point of a leaf-shaped value as a slab along `axis`."""
        old = self.old(v, axis, axis)
        start = [self.idx[d] if d != axis else jnp.zeros_like(self.idx[d]) for d in range(old.ndim)]
        return Slab(axis, axis, lax.dynamic_update_slice(old, r.value.astype(old.dtype).reshape((1,) * old.ndim), start))

    def entry(self, x):
        x = jnp.asarray(x)
        return x if x.ndim == 0 else lax.dynamic_slice(x, self.idx, (1,) * x.ndim).reshape(())


def _largest(shape, axes):
    axes = [a for a in axes if shape[a] > 1]
    return max(axes, key=lambda a: shape[a]) if axes else None


def _sparse(r) -> bool:
    return isinstance(r, (Point, Slab))


def _elementwise(run, eqn, reps):
    changed = [r for r in reps if r is not None]
    if not all(_sparse(r) for r in changed):
        return None
    if all(isinstance(r, Point) for r in changed):
        # A point lives in the leaf's index space: every other operand, and the output, must share it.
        ndims = [jnp.ndim(run.value(v)) for v, r in zip(eqn.invars, reps, strict=True) if r is None]
        if any(d not in (0, len(run.idx)) for d in ndims) or len(eqn.outvars[0].aval.shape) not in (0, len(run.idx)):
            return None
        args = [r.value if r is not None else run.entry(run.value(v)) for v, r in zip(eqn.invars, reps, strict=True)]
        return [Point(_bind(eqn, args)[0])]
    slabs = {(r.axis, r.comp) for r in changed if isinstance(r, Slab)}
    if len(slabs) != 1:
        return None
    ((axis, comp),) = slabs
    if any(isinstance(r, Point) for r in changed) and axis != comp:
        return None
    args = []
    for v, r in zip(eqn.invars, reps, strict=True):
        if isinstance(r, Slab):
            args.append(r.new)
        elif isinstance(r, Point):
            args.append(run.slab(v, r, axis).new)
        elif jnp.ndim(run.value(v)) == 0:
            args.append(run.value(v))
        else:
            args.append(run.old(v, axis, comp))
    return [Slab(axis, comp, _bind(eqn, args)[0])]


def _dot_general(run, eqn, reps):
    changed = [i for i, r in enumerate(reps) if r is not None]
    if len(changed) != 1 or not _sparse(reps[changed[0]]):
        return None
    (side,) = changed
    (contract, batch) = eqn.params["dimension_numbers"]
    mine_c, mine_b, other_c, other_b = contract[side], batch[side], contract[1 - side], batch[1 - side]
    v, r = eqn.invars[side], reps[side]
    shape = eqn.invars[side].aval.shape
    free = [d for d in range(len(shape)) if d not in mine_c and d not in mine_b]
    if isinstance(r, Point):
        axis = _largest(shape, free)
        axis = axis if axis is not None else _largest(shape, mine_b)
        axis = axis if axis is not None else _largest(shape, mine_c)
        if axis is None:
            return None
        r = run.slab(v, r, axis)
    other_v = eqn.invars[1 - side]
    order = (lambda a, b: [a, b]) if side == 0 else (lambda a, b: [b, a])
    if r.axis in free:
        lhs_free = len(eqn.invars[0].aval.shape) - len(contract[0]) - len(batch[0])
        out_axis = len(mine_b) + free.index(r.axis) + (lhs_free if side == 1 else 0)
        return [Slab(out_axis, r.comp, _bind(eqn, order(r.new, run.value(other_v)))[0])]
    if r.axis in mine_b:
        pos = list(mine_b).index(r.axis)
        other = run.old(other_v, other_b[pos], r.comp)
        return [Slab(pos, r.comp, _bind(eqn, order(r.new, other))[0])]
    pos = list(mine_c).index(r.axis)  # contracted: a rank-one (or rank-slab) update of the output
    delta = r.new - run.old(v, r.axis, r.comp)
    other = run.old(other_v, other_c[pos], r.comp)
    return [run.value(eqn.outvars[0]) + _bind(eqn, order(delta, other))[0]]


def _broadcast_in_dim(run, eqn, reps):
    v, r = eqn.invars[0], reps[0]
    if len(eqn.invars) != 1 or not _sparse(r):
        return None
    shape = v.aval.shape
    if isinstance(r, Point):
        axis = _largest(shape, range(len(shape)))
        if axis is None:
            return None
        r = run.slab(v, r, axis)
    dims, out_shape = eqn.params["broadcast_dimensions"], eqn.params["shape"]
    out_axis = dims[r.axis]
    if shape[r.axis] == 1 and out_shape[out_axis] != 1:
        return None
    new_shape = tuple(1 if d == out_axis else s for d, s in enumerate(out_shape))
    return [Slab(out_axis, r.comp, _bind(eqn, [r.new], shape=new_shape)[0])]


def _transpose(run, eqn, reps):
    v, r = eqn.invars[0], reps[0]
    if not _sparse(r):
        return None
    if isinstance(r, Point):
        axis = _largest(v.aval.shape, range(v.aval.ndim))
        if axis is None:
            return None
        r = run.slab(v, r, axis)
    perm = eqn.params["permutation"]
    return [Slab(list(perm).index(r.axis), r.comp, _bind(eqn, [r.new])[0])]


def _reduce_sum(run, eqn, reps):
    v, r = eqn.invars[0], reps[0]
    if not _sparse(r):
        return None
    axes = eqn.params["axes"]
    if isinstance(r, Point):
        shape = v.aval.shape
        axis = _largest(shape, [d for d in range(len(shape)) if d not in axes])
        axis = axis if axis is not None else _largest(shape, axes)
        if axis is None:
            return None
        r = run.slab(v, r, axis)
    if r.axis not in axes:
        return [Slab(r.axis - sum(a < r.axis for a in axes), r.comp, _bind(eqn, [r.new])[0])]
    delta = r.new - run.old(v, r.axis, r.comp)
    return [run.value(eqn.outvars[0]) + _bind(eqn, [delta])[0]]


RULES = {"dot_general": _dot_general, "broadcast_in_dim": _broadcast_in_dim, "transpose": _transpose, "reduce_sum": _reduce_sum}


def point_loss(jaxpr, eqns, invar):
    """J as a function of (probe multi-index, new value of that entry of the leaf, base values).

    `eqns` are the equations downstream of `invar` (the leaf); `base` maps every other
    variable of `jaxpr` to its value at θ.
    """
    outvar = jaxpr.outvars[0]

    def run_loss(idx, value, base):
        run = _Run(base, idx)
        env = {invar: Point(value)}
        rep = lambda v: env.get(v) if isinstance(v, jcore.Var) else None  # noqa: E731
        for eqn in eqns:
            reps = [rep(v) for v in eqn.invars]
            name = eqn.primitive.name
            rule = _elementwise if name in ELEMENTWISE else RULES.get(name)
            out = rule(run, eqn, reps) if rule is not None else None
            if out is None:
                out = _bind(eqn, [run.dense(v, r) for v, r in zip(eqn.invars, reps, strict=True)])
            env.update(zip(eqn.outvars, out, strict=True))
        return run.dense(outvar, rep(outvar))

    return run_loss
