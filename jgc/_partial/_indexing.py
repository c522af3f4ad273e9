"""Box rules, indexing: slices, padding, updates, gather and scatter.

- `slice`, `dynamic_slice`, `pad`: a one-index window moves to the output index it lands
  on (strides, clamped starts, negative and interior padding), clamped, and its values are
  selected against the value at θ where the changed entry falls outside (`_visible`);
- `dynamic_update_slice`: a changed operand keeps its box (overwritten entries read from
  θ's output); a changed update lands in a box at the update's place;
- `gather`, `scatter*` (embedding lookups, `.at[].add`): a window on an axis the indices
  do not touch passes through.

Changed indices, start indices or padding values: dense evaluation.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._box import Box, bind, boxed, changed_boxes, region_of, select, union, whole


def _slice(run, eqn, reps):
    (v,), r = eqn.invars, reps[0]
    if not isinstance(r, Box):
        return None
    shape, out_shape = v.aval.shape, eqn.outvars[0].aval.shape
    p = eqn.params
    strides = p["strides"] or (1,) * len(shape)
    in_reg, out_reg, starts, limits, new_strides, visible = [], [], [], [], [], []
    for d, ((s, n), a, b, k) in enumerate(zip(region_of(r), p["start_indices"], p["limit_indices"], strides, strict=True)):
        if (a, b, k) == (0, shape[d], 1):  # the whole axis: its window passes through
            in_reg.append((s, n)), out_reg.append((s, n)), starts.append(0), limits.append(n), new_strides.append(1)
        elif s is not None and n == 1:  # one index: lands at (s − a) / k if that is a whole index in range
            off = s - a
            q = off // k
            visible.append((off >= 0) & (off % k == 0) & (q < out_shape[d]))
            in_reg.append((s, 1)), out_reg.append((jnp.clip(q, 0, out_shape[d] - 1), 1))
            starts.append(0), limits.append(1), new_strides.append(1)
        else:
            in_reg.append((None, shape[d])), out_reg.append((None, out_shape[d]))
            starts.append(a), limits.append(b), new_strides.append(k)
    out = bind(
        eqn, [run.region(v, r, in_reg)], start_indices=tuple(starts), limit_indices=tuple(limits), strides=tuple(new_strides)
    )[0]
    return _visible(run, eqn, out, out_reg, visible)


def _visible(run, eqn, out, out_reg, visible):
    if visible:  # where the changed entry falls outside, the output there is θ's
        seen = visible[0]
        for x in visible[1:]:
            seen = seen & x
        out = select(seen, out, run.region(eqn.outvars[0], None, out_reg))
    return [boxed([s for s, _ in out_reg], out)]


def _dynamic_slice(run, eqn, reps):
    v, idx = eqn.invars[0], eqn.invars[1:]
    r = reps[0]
    if not isinstance(r, Box) or any(x is not None for x in reps[1:]):
        return None
    shape, sizes = v.aval.shape, eqn.params["slice_sizes"]
    in_reg, out_reg, starts, new_sizes, visible = [], [], [], [], []
    for d, ((s, n), iv, size) in enumerate(zip(region_of(r), idx, sizes, strict=True)):
        start = run.value(iv)
        if size == shape[d]:  # the whole axis: clamped to start 0
            in_reg.append((s, n)), out_reg.append((s, n)), starts.append(jnp.zeros_like(start)), new_sizes.append(n)
        elif s is not None and n == 1:
            off = s - jnp.clip(start, 0, shape[d] - size).astype(jnp.int32)
            visible.append((off >= 0) & (off < size))
            in_reg.append((s, 1)), out_reg.append((jnp.clip(off, 0, size - 1), 1))
            starts.append(jnp.zeros_like(start)), new_sizes.append(1)
        else:
            in_reg.append((None, shape[d])), out_reg.append((None, size)), starts.append(start), new_sizes.append(size)
    out = bind(eqn, [run.region(v, r, in_reg), *starts], slice_sizes=tuple(new_sizes))[0]
    return _visible(run, eqn, out, out_reg, visible)


def _pad(run, eqn, reps):
    (v, pv), r = eqn.invars, reps[0]
    if not isinstance(r, Box) or reps[1] is not None:
        return None
    shape, out_shape = v.aval.shape, eqn.outvars[0].aval.shape
    in_reg, out_reg, config, visible = [], [], [], []
    for d, ((s, n), (lo, hi, interior)) in enumerate(zip(region_of(r), eqn.params["padding_config"], strict=True)):
        if s is not None and n == 1:
            q = lo + s * (interior + 1)
            visible.append((q >= 0) & (q < out_shape[d]))
            in_reg.append((s, 1)), out_reg.append((jnp.clip(q, 0, out_shape[d] - 1), 1)), config.append((0, 0, 0))
        else:
            in_reg.append((None, shape[d])), out_reg.append((None, out_shape[d])), config.append((lo, hi, interior))
    out = bind(eqn, [run.region(v, r, in_reg), run.value(pv)], padding_config=tuple(config))[0]
    return _visible(run, eqn, out, out_reg, visible)


def _dynamic_update_slice(run, eqn, reps):
    (v, u), idx = eqn.invars[:2], eqn.invars[2:]
    if any(x is not None for x in reps[2:]) or (reps[0] is None) == (reps[1] is None):
        return None
    shape, ushape = v.aval.shape, u.aval.shape
    starts = [jnp.clip(run.value(i), 0, shape[d] - ushape[d]).astype(jnp.int32) for d, i in enumerate(idx)]
    if reps[0] is not None:  # the operand changed: its box, with θ's output where the update lands
        r = reps[0]
        if not isinstance(r, Box):
            return None
        inside = jnp.ones((), bool)
        for d, (s, n) in enumerate(region_of(r)):
            pos = (0 if s is None else s) + lax.broadcasted_iota(
                jnp.int32, tuple(n if e == d else 1 for e in range(len(shape))), d
            )
            inside = inside & (pos >= starts[d]) & (pos < starts[d] + ushape[d])
        theta_out = run.region(eqn.outvars[0], None, region_of(r))
        return [Box(r.starts, lax.select(jnp.broadcast_to(inside, r.new.shape), theta_out, r.new.astype(theta_out.dtype)))]
    r = reps[1]  # the update changed: it lands at the update's place
    reg = region_of(r) if isinstance(r, Box) else whole(ushape)
    new = r.new if isinstance(r, Box) else r
    out_starts = [
        None if s is None and n == shape[d] else st + (0 if s is None else s)
        for d, ((s, n), st) in enumerate(zip(reg, starts, strict=True))
    ]
    return [boxed(out_starts, new.astype(eqn.outvars[0].aval.dtype))]


def _gather(run, eqn, reps):
    (v, ind), r = eqn.invars, reps[0]
    if not isinstance(r, Box) or reps[1] is not None:
        return None
    dn, sizes, shape = eqn.params["dimension_numbers"], list(eqn.params["slice_sizes"]), v.aval.shape
    offset_axes = [a for a in range(len(shape)) if a not in dn.collapsed_slice_dims and a not in dn.operand_batching_dims]
    in_reg, out_reg = whole(shape), whole(eqn.outvars[0].aval.shape)
    for k, a in enumerate(offset_axes):
        if a not in dn.start_index_map and sizes[a] == shape[a] and r.starts[a] is not None:
            in_reg[a] = out_reg[dn.offset_dims[k]] = region_of(r)[a]
            sizes[a] = in_reg[a][1]
    if all(s is None for s, _ in out_reg):
        return None
    out = bind(eqn, [run.region(v, r, in_reg), run.value(ind)], slice_sizes=tuple(sizes))[0]
    return [boxed([s for s, _ in out_reg], out)]


def _scatter(run, eqn, reps):
    if len(eqn.invars) != 3 or reps[1] is not None or changed_boxes(reps) is None:
        return None
    (v, ind, u), (rv, _, ru) = eqn.invars, reps
    dn, shape, ushape = eqn.params["dimension_numbers"], v.aval.shape, u.aval.shape
    window_axes = [a for a in range(len(shape)) if a not in dn.inserted_window_dims and a not in dn.operand_batching_dims]
    in_reg, up_reg = whole(shape), whole(ushape)
    for k, a in enumerate(window_axes):
        ua = dn.update_window_dims[k]
        if a in dn.scatter_dims_to_operand_dims or ushape[ua] != shape[a]:
            continue
        windows = ([region_of(rv)[a]] if rv is not None else []) + ([region_of(ru)[ua]] if ru is not None else [])
        in_reg[a] = up_reg[ua] = union(windows, shape[a])
    if all(s is None for s, _ in in_reg):
        return None
    out = bind(eqn, [run.region(v, rv, in_reg), run.value(ind), run.region(u, ru, up_reg)])[0]
    return [boxed([s for s, _ in in_reg], out)]


RULES = {
    "slice": _slice,
    "dynamic_slice": _dynamic_slice,
    "pad": _pad,
    "dynamic_update_slice": _dynamic_update_slice,
    "gather": _gather,
    "scatter": _scatter,
    "scatter-add": _scatter,
    "scatter-mul": _scatter,
    "scatter-min": _scatter,
    "scatter-max": _scatter,
}
