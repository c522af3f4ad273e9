"""The vector-function check shared by check_vjp, check_jvp and check_hvp: a rule's output along
random directions (each confined to one input leaf) against the engine's finite differences of a
vector-valued function of θ, through the one verdict; a group is one (output leaf, perturbed
input leaf) pair. Also the options and primals they share."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _pipeline, _probes, _tree, _validate
from ._engine import Engine
from ._result import JVPCheck
from ._typing import PyTree


def validate_layer(f, rule_name, rule, primals, key, method, eps, tol, chunk_size, key_name="key") -> tuple:
    _validate.callable_("f", f)
    _validate.callable_(rule_name, rule)
    _validate.options(f, None, method, eps, tol, chunk_size, grad_name=None)
    if not primals:
        raise ValueError(
            f"no primals given: pass the inputs of f after {rule_name}, e.g. jgc.check_vjp(f, {rule_name}, x, key=key)."
        )
    _validate.key(key, key_name)
    params = _validate.prepare(tuple(primals))
    _tree.layout(params, name="primals")  # fail before tracing when no primal is floating point
    return params


def tangents(lay: _tree.Layout, d: jax.Array, params) -> PyTree:
    """Tangents like the primals (same pytree structure): d on checked leaves, zeros on
    other arrays, and non-array leaves (an equinox Module's functions) kept as they are."""
    leaves = [
        jnp.zeros(np.shape(x), x.dtype) if _tree.is_array(x) and not _tree.is_key(x) else x
        for x in lay.treedef.flatten_up_to(params)
    ]
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes, strict=True):
        leaves[i] = d[o : o + s].reshape(lay.shapes[i]).astype(lay.dtypes[i])
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def random_like(key, *, lay: _tree.Layout) -> PyTree:
    """Gaussian arrays shaped like the layout's leaves (a cotangent)."""
    keys = jax.random.split(key, len(lay.shapes))
    leaves = [jax.random.normal(k, s, d) for k, s, d in zip(keys, lay.shapes, lay.dtypes, strict=True)]
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class Rule:
    """The analytic side of a vector check: rule(direction of each probe), raveled like the output."""

    ref: _jit.Ref
    name: str
    like: str
    noun: str
    lay: _tree.Layout
    out_lay: _tree.Layout
    static: tuple
    primals_first: bool  # JVP: rule(primals, tangents); HVP: rule(params, v, *args)

    def __call__(self, theta, dynamic, key, probes):
        params, args = _jit.combine(dynamic, self.static)
        params = _tree.unravel(self.lay, theta, params)

        def one(i):
            d, _ = _probes.direction(probes, i, theta, key)
            t = tangents(self.lay, d, params)
            if self.primals_first:
                out = _validate.trace(self.name, self.ref(), tuple(params), t)
            else:
                out = _validate.trace(self.name, self.ref(), params, t, *args)
            _validate.like_params(self.out_lay, out, self.name, like=self.like, noun=self.noun)
            return _tree.ravel(self.out_lay, out).astype(theta.dtype)

        return jax.lax.map(one, jnp.arange(len(probes)))


def pair_layout(lay: _tree.Layout, out_lay: _tree.Layout, per_group: int, probe_groups: int, out_name: str):
    """The groups of a vector check: one per (probe group, output leaf), shaped (probe, *output shape).

    With one probe group the layout keeps the output's tree (so `numeric["W"]` works), each
    checked leaf gaining a leading probe axis. Returns (the layout, the flat (probe, output)
    index of each entry in group order).
    """
    out_n = out_lay.n
    order = []
    for g in range(probe_groups):
        rows = np.arange(g * per_group, (g + 1) * per_group)
        for off, size in zip(out_lay.offsets, out_lay.sizes, strict=True):
            order.append((rows[:, None] * out_n + off + np.arange(size)[None, :]).reshape(-1))
    order = np.concatenate(order) if order else np.zeros(0, int)
    if probe_groups == 1:
        shapes = tuple((per_group, *s) if c else s for s, c in zip(out_lay.shapes, out_lay.checked, strict=True))
        return dataclasses.replace(out_lay, shapes=shapes), order
    paths, shapes, dtypes = [], [], []
    for g in range(probe_groups):
        for o in out_lay.checked_index:
            paths.append(f"{out_name}{out_lay.paths[o]} ← {lay.checked_paths[g]}")
            shapes.append((per_group, *out_lay.shapes[o]))
            dtypes.append(min(jnp.dtype(lay.low_dtype), jnp.dtype(out_lay.dtypes[o]), key=lambda d: d.itemsize).name)
    treedef = jax.tree_util.tree_structure([0] * len(paths))
    return _tree.Layout(treedef, tuple(paths), tuple(shapes), tuple(dtypes), (True,) * len(paths)), order


def vector_check(
    make,
    params,
    args,
    probes,
    rule,
    rule_name: str,
    like: tuple,
    per_group: int,
    probe_groups: int,
    result,
    options,
    eps,
    tol,
    key,
):
    """The pipeline on a vector-valued function of θ along `probes`, against `rule`, per
    (group, output leaf). `make(params, args) -> Problem` sets up the function of θ (again in
    float64 for a float64 re-check); the rule's values along every probe are its analytic side."""
    like_name, noun = like

    def build(params, args):
        p = make(params, args)
        spec = Rule(_jit.Ref(rule), rule_name, like_name, noun, p.lay, p.out_lay, p.static, result is JVPCheck)
        pr = probes if p.traced else jax.tree_util.tree_map(np.asarray, probes)
        return p, _pipeline.Side(None, p.call(("rule", spec), spec, key, pr))  # directions do not depend on the step

    def engine_of(p, side, n):
        return Engine(p, probes.kind, n, options.chunk_size, False, key)

    problem, side = build(params, args)
    assert problem.out_lay is not None
    layout, order = pair_layout(problem.lay, problem.out_lay, per_group, probe_groups, "out")
    grouping = _pipeline.Grouping(layout.segments, layout.k, layout.sizes, order, problem.out_lay.n)
    engine, state, evals = _pipeline.execute(problem, side, probes, grouping, engine_of, build, options, eps, tol, key)
    return _pipeline.result(result, problem, engine, state, grouping, layout, evals)
