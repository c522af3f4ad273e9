"""Propagate only the change: one changed entry of a leaf, through the equations downstream of it.

A one-hot probe changes one entry of one leaf. `point_loss` evaluates the equations
downstream of the leaf on a description of how little of each value changed:

- a `Box`: per axis, either the whole axis or a window (a traced start, a static size);
  the values inside the box are stored, every entry outside it equals the value at θ.
  The leaf itself starts as a box of one entry at the probe's multi-index;
- a dense array: everything may have changed;
- `None`: unchanged (the value at θ, read from the base evaluation).

Exact by construction. Every rule below computes the output entries inside the box
it returns with the equation's own primitive (or an exact select between values),
on operand regions that contain every entry those outputs read, and returns a box
that contains every output entry that can differ from θ's. A rule that cannot show
this for an equation (a shape it does not recognise, a changed index operand, two
changed operands where it handles one) returns `None`, and the equation is evaluated
densely: its operands are the values at θ with the boxes written in. Windows always
lie inside their axis (0 ≤ start ≤ size of the axis − size of the window), so writing
a box in never clamps. Shapes are read from the jaxpr, never assumed: an operand of
size 1 on an axis where the output is larger (JAX broadcasts size-1 axes implicitly
in binary operations, `add f32[4,6] f32[4,1]`) spreads its change along the whole axis.

Rules:

- elementwise primitives (operands of the output's shape, size-1 axes, or rank 0):
  the union of the operands' boxes (the whole axis where they disagree or where a
  changed operand is broadcast);
- `broadcast_in_dim`, `reshape` (axis groups of equal size, a box that stays a box),
  `squeeze`, `transpose`, `rev`, `concatenate`, `stack`: boxes move to their new axes;
- `slice`, `dynamic_slice`, `pad`: a one-index window moves to the output index it
  lands on, clamped, and its values are selected against the value at θ when it falls
  outside the slice (`visible`);
- `dynamic_update_slice`: a changed operand keeps its box (overwritten entries read
  from θ's output); a changed update lands in a box at the update's place;
- `gather`, `scatter*` (embedding lookups, `.at[].add`): a window on an axis the
  indices do not touch passes through; indices must be unchanged;
- reductions (`reduce_*`, `argmax`, `argmin`): kept axes keep their window; the reduced
  axes are recomputed whole, except `reduce_sum`, which adds Σ(new − old) to θ's output;
- `cumsum`-like scans, `sort`, `top_k`, `split`, `tile`, `reduce_window_*`: windows on the
  axes they do not mix pass through, the mixed axes are recomputed whole;
- `dot_general`: windows on free and batch axes pass to the output; a window on a
  contracted axis gives a low-rank update out + (new − old)·other[window];
- `conv_general_dilated` (no feature or batch groups): a window on the kernel's output
  feature recomputes that output feature; a window on the kernel's input feature or on
  the input's feature gives out + conv(new − old, other[window]); a window on the input's
  batch recomputes that batch entry.

Results equal dense recomputation up to rounding: a recomputed box sums the same terms
(possibly in another order), and a low-rank or reduced update rounds out + Δ instead of
recomputing out (which also makes an infinite value of θ's evaluation turn into NaN where
dense evaluation would keep it infinite).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

# Primitives applied entry by entry: operands of the output's shape, size-1 axes, or rank 0.
ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type copy
    copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite
    le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision rem round
    rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor""".split()
)


@dataclasses.dataclass(frozen=True)
class Box:
    starts: tuple  # per axis: None (the whole axis) or a traced int32 scalar (a window's first index)
    new: Any  # the values inside the box: per axis the window's size, or the axis' size


def _box(starts, new):
    """A box, or the dense array itself when the box covers every axis."""
    starts = tuple(starts)
    return Box(starts, new) if any(s is not None for s in starts) else new


def _reg(box) -> list[tuple[Any, int]]:
    return [(s, n) for s, n in zip(box.starts, jnp.shape(box.new), strict=True)]


def _full(shape) -> list[tuple[Any, int]]:
    """A region covering every axis whole: (start, size) per axis, start None for a whole axis."""
    return [(None, n) for n in shape]


def _same(a, b):
    return a[0] is b[0] and a[1] == b[1]


def _union(windows, size):
    """One window if every changed operand has the same one, else the whole axis."""
    if not windows or any(w[0] is None for w in windows) or any(not _same(w, windows[0]) for w in windows):
        return (None, size)
    return windows[0]


def _bind(eqn, invals, **override):
    params = dict(eqn.primitive.get_bind_params(eqn.params), **override)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is not None:
        with ctx:
            out = eqn.primitive.bind(*invals, **params)
    else:
        out = eqn.primitive.bind(*invals, **params)
    return out if eqn.primitive.multiple_results else [out]


def _i32(x):
    return jnp.asarray(x, jnp.int32)


def _select(pred, a, b):
    return lax.select(jnp.broadcast_to(pred, jnp.shape(a)), a, b)


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


class _Run:
    """One evaluation of the downstream equations for the probe at multi-index `idx`."""

    def __init__(self, base):
        self.base = base

    def value(self, v):
        return v.val if isinstance(v, jcore.Literal) else self.base[v]

    def dense(self, v, r):
        if r is None:
            return self.value(v)
        if isinstance(r, Box):
            starts = [_i32(0) if s is None else s for s in r.starts]
            return lax.dynamic_update_slice(self.value(v), r.new.astype(v.aval.dtype), starts)
        return r

    def region(self, v, r, reg):
        """The entries of v's new value in `reg` (per axis (start or None, size))."""
        if r is not None and not isinstance(r, Box):
            x = r
        elif r is None or any(
            rs is not None and bs is not None and not _same((rs, rn), (bs, bn))
            for (rs, rn), (bs, bn) in zip(reg, _reg(r), strict=True)
        ):
            x = self.dense(v, r)
        else:  # the box lies inside the region's windows: slice its full axes, write it into θ's values
            new = r.new
            for d, ((rs, rn), (bs, _)) in enumerate(zip(reg, _reg(r), strict=True)):
                if rs is not None and bs is None:
                    new = lax.dynamic_slice_in_dim(new, rs, rn, d)
            if all(rs is not None or bs is None for (rs, _), bs in zip(reg, r.starts, strict=True)):
                return new
            x = self.region(v, None, reg)
            offsets = [_i32(0 if rs is not None or bs is None else bs) for (rs, _), bs in zip(reg, r.starts, strict=True)]
            return lax.dynamic_update_slice(x, new.astype(x.dtype), offsets)
        if all(s is None for s, _ in reg):
            return x
        return lax.dynamic_slice(jnp.asarray(x, v.aval.dtype), [_i32(0 if s is None else s) for s, _ in reg], [n for _, n in reg])


def _changed_boxes(reps):
    """The changed operands, or None when one of them changed densely."""
    changed = [r for r in reps if r is not None]
    return changed if all(isinstance(r, Box) for r in changed) else None


# ---------------------------------------------------------------- entry by entry


def _elementwise(run, eqn, reps):
    out_shape = eqn.outvars[0].aval.shape
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    if any(
        len(s) not in (0, len(out_shape)) or (s and any(a not in (1, b) for a, b in zip(s, out_shape, strict=True)))
        for s in shapes
    ):
        return None
    if _changed_boxes(reps) is None or len(eqn.outvars) != 1:
        return None
    reg = []
    for d, size in enumerate(out_shape):
        windows = []
        for s, r in zip(shapes, reps, strict=True):
            if r is not None:  # a box has rank ≥ 1, so s has the output's rank
                windows.append((None, size) if s[d] != size else _reg(r)[d])
        reg.append(_union(windows, size))
    args = []
    for v, s, r in zip(eqn.invars, shapes, reps, strict=True):
        if not s:
            args.append(run.value(v))
        else:  # a size-1 axis broadcast by the primitive stays whole (size 1)
            args.append(run.region(v, r, [(None, 1) if a != b else w for a, b, w in zip(s, out_shape, reg, strict=True)]))
    return [_box([s for s, _ in reg], _bind(eqn, args)[0])]


def _axiswise(run, eqn, reps, mixed):
    """An equation whose outputs, along every axis not in `mixed`, read only the same index."""
    if _changed_boxes(reps) is None:
        return None
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    nd = len(shapes[0])
    if any(len(s) != nd for s in shapes) or any(len(o.aval.shape) != nd for o in eqn.outvars):
        return None
    keep = [d for d in range(nd) if d not in mixed]
    if any(s[d] != shapes[0][d] for s in shapes for d in keep) or any(
        o.aval.shape[d] != shapes[0][d] for o in eqn.outvars for d in keep
    ):
        return None
    reg = [(None, n) for n in shapes[0]]
    for d in keep:
        reg[d] = _union([_reg(r)[d] for r in reps if r is not None], shapes[0][d])
    args = [
        run.region(v, r, [(None, s[d]) if d in mixed else reg[d] for d in range(nd)])
        for v, r, s in zip(eqn.invars, reps, shapes, strict=True)
    ]
    outs = _bind(eqn, args)
    return [_box([None if d in mixed else reg[d][0] for d in range(nd)], o) for o in outs]


def _cumulative(run, eqn, reps):
    return _axiswise(run, eqn, reps, {eqn.params["axis"]})


def _sort(run, eqn, reps):
    return _axiswise(run, eqn, reps, {eqn.params["dimension"]})


def _top_k(run, eqn, reps):
    axis = eqn.params.get("axis", eqn.invars[0].aval.ndim - 1)
    return _axiswise(run, eqn, reps, {axis % eqn.invars[0].aval.ndim})


def _split(run, eqn, reps):
    return _axiswise(run, eqn, reps, {eqn.params["axis"]})


def _tile(run, eqn, reps):
    return _axiswise(run, eqn, reps, {d for d, k in enumerate(eqn.params["reps"]) if k != 1})


def _reduce_window(run, eqn, reps):
    p = eqn.params
    axes = zip(p["window_dimensions"], p["window_strides"], p["padding"], p["base_dilation"], p["window_dilation"], strict=True)
    mixed = {d for d, (w, s, pad, bd, wd) in enumerate(axes) if (w, s, tuple(pad), bd, wd) != (1, 1, (0, 0), 1, 1)}
    return _axiswise(run, eqn, reps, mixed)


# ---------------------------------------------------------------- moving boxes


def _broadcast_in_dim(run, eqn, reps):
    (v,), (r,) = eqn.invars[:1], reps[:1]
    if len(eqn.invars) != 1 or not isinstance(r, Box):
        return None
    shape, out_shape, dims = v.aval.shape, eqn.params["shape"], eqn.params["broadcast_dimensions"]
    in_reg, out_reg = _full(shape), _full(out_shape)
    for i, j in enumerate(dims):
        if shape[i] == out_shape[j] and r.starts[i] is not None:
            in_reg[i] = out_reg[j] = _reg(r)[i]
    out = _bind(eqn, [run.region(v, r, in_reg)], shape=tuple(n for _, n in out_reg))[0]
    return [_box([s for s, _ in out_reg], out)]


def _groups(src, dst):
    """Axis groups (source axes, destination axes) of equal size, each as small as possible."""
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        gi, gj, pi, pj = [], [], 1, 1
        if i < len(src):
            gi, pi, i = [i], src[i], i + 1
        else:
            gj, pj, j = [j], dst[j], j + 1
        while pi != pj:
            if pi < pj:
                gi, pi, i = gi + [i], pi * src[i], i + 1
            else:
                gj, pj, j = gj + [j], pj * dst[j], j + 1
        groups.append((gi, gj))
    return groups


def _reshape(run, eqn, reps):
    (v,), (r,) = eqn.invars[:1], reps[:1]
    if len(eqn.invars) != 1 or not isinstance(r, Box) or eqn.params.get("dimensions") is not None:
        return None
    src, dst = tuple(v.aval.shape), tuple(eqn.params["new_sizes"])
    if 0 in src or 0 in dst:
        return None
    in_reg, out_reg = _full(src), _full(dst)
    box = _reg(r)
    for gi, gj in _groups(src, dst):
        # row-major within the group: leading one-index windows, then one window, then whole axes
        k = 0
        while k < len(gi) and box[gi[k]][0] is not None and box[gi[k]][1] == 1:
            k += 1
        lead = k
        if k < len(gi) and box[gi[k]][0] is not None:
            k += 1
        if k == 0 or any(box[a][0] is not None for a in gi[k:]):
            continue  # whole group
        strides = [int(np.prod([src[b] for b in gi[m + 1 :]], dtype=np.int64)) for m in range(len(gi))]
        flat = sum(box[gi[m]][0] * strides[m] for m in range(k))
        size = int(np.prod([box[a][1] for a in gi], dtype=np.int64))
        if len(gj) == 1:
            out_reg[gj[0]] = (flat, size)
        else:
            # the range [flat, flat + size) as a box of dst: leading one-index windows, then whole axes
            tail = [int(np.prod([dst[b] for b in gj[t:]], dtype=np.int64)) for t in range(len(gj) + 1)]
            if size not in tail or (lead < k and size != 1):
                continue
            t = tail.index(size)
            q = flat // size
            for a in reversed(gj[:t]):
                out_reg[a] = (q % dst[a], 1)
                q = q // dst[a]
        for a in gi[:k]:
            in_reg[a] = box[a]
    if all(s is None for s, _ in out_reg):
        return None
    out = _bind(eqn, [run.region(v, r, in_reg)], new_sizes=tuple(n for _, n in out_reg), dimensions=None)[0]
    return [_box([s for s, _ in out_reg], out)]


def _squeeze(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    dims = {d % len(r.starts) for d in eqn.params["dimensions"]}
    return [_box([s for d, s in enumerate(r.starts) if d not in dims], _bind(eqn, [r.new])[0])]


def _transpose(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    return [_box([r.starts[p] for p in eqn.params["permutation"]], _bind(eqn, [r.new])[0])]


def _rev(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    shape, dims = eqn.invars[0].aval.shape, eqn.params["dimensions"]
    starts = [s if s is None or d not in dims else shape[d] - s - n for d, (s, n) in enumerate(_reg(r))]
    return [_box(starts, _bind(eqn, [r.new])[0])]


def _concatenate(run, eqn, reps):
    changed = _changed_boxes(reps)
    if changed is None:
        return None
    axis, out_shape = eqn.params["dimension"], eqn.outvars[0].aval.shape
    reg = [_union([_reg(r)[d] for r in changed], n) for d, n in enumerate(out_shape)]
    where = [i for i, r in enumerate(reps) if r is not None]
    if len(where) == 1 and reps[where[0]].starts[axis] is not None:
        i, r = where[0], reps[where[0]]
        offset = sum(v.aval.shape[axis] for v in eqn.invars[:i])
        reg[axis] = _reg(r)[axis]
        new = run.region(eqn.invars[i], r, reg)
        # the start on `axis` is not None (checked above): the window moves by the offset of operand i
        return [_box([s + offset if d == axis else s for d, (s, _) in enumerate(reg)], new)]  # pyright: ignore[reportOptionalOperand]
    args = [
        run.region(v, r, [(None, v.aval.shape[d]) if d == axis else reg[d] for d in range(len(reg))])
        for v, r in zip(eqn.invars, reps, strict=True)
    ]
    return [_box([None if d == axis else s for d, (s, _) in enumerate(reg)], _bind(eqn, args)[0])]


def _stack(run, eqn, reps):
    changed = _changed_boxes(reps)
    if changed is None:
        return None
    axis, shape = eqn.params["axis"], eqn.invars[0].aval.shape
    reg = [_union([_reg(r)[d] for r in changed], n) for d, n in enumerate(shape)]
    where = [i for i, r in enumerate(reps) if r is not None]
    starts = [s for s, _ in reg]
    if len(where) == 1:
        new = lax.expand_dims(run.region(eqn.invars[where[0]], reps[where[0]], reg), (axis,))
        return [_box(starts[:axis] + [_i32(where[0])] + starts[axis:], new)]
    args = [run.region(v, r, reg) for v, r in zip(eqn.invars, reps, strict=True)]
    return [_box(starts[:axis] + [None] + starts[axis:], _bind(eqn, args)[0])]


# ---------------------------------------------------------------- slices and updates


def _slice(run, eqn, reps):
    (v,), r = eqn.invars, reps[0]
    if not isinstance(r, Box):
        return None
    shape, out_shape = v.aval.shape, eqn.outvars[0].aval.shape
    p = eqn.params
    strides = p["strides"] or (1,) * len(shape)
    in_reg, out_reg, starts, limits, new_strides, visible = [], [], [], [], [], []
    for d, ((s, n), a, b, k) in enumerate(zip(_reg(r), p["start_indices"], p["limit_indices"], strides, strict=True)):
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
    out = _bind(
        eqn, [run.region(v, r, in_reg)], start_indices=tuple(starts), limit_indices=tuple(limits), strides=tuple(new_strides)
    )[0]
    return _visible(run, eqn, out, out_reg, visible)


def _visible(run, eqn, out, out_reg, visible):
    if visible:  # where the changed entry falls outside, the output there is θ's
        seen = visible[0]
        for x in visible[1:]:
            seen = seen & x
        out = _select(seen, out, run.region(eqn.outvars[0], None, out_reg))
    return [_box([s for s, _ in out_reg], out)]


def _dynamic_slice(run, eqn, reps):
    v, idx = eqn.invars[0], eqn.invars[1:]
    r = reps[0]
    if not isinstance(r, Box) or any(x is not None for x in reps[1:]):
        return None
    shape, sizes = v.aval.shape, eqn.params["slice_sizes"]
    in_reg, out_reg, starts, new_sizes, visible = [], [], [], [], []
    for d, ((s, n), iv, size) in enumerate(zip(_reg(r), idx, sizes, strict=True)):
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
    out = _bind(eqn, [run.region(v, r, in_reg), *starts], slice_sizes=tuple(new_sizes))[0]
    return _visible(run, eqn, out, out_reg, visible)


def _pad(run, eqn, reps):
    (v, pv), r = eqn.invars, reps[0]
    if not isinstance(r, Box) or reps[1] is not None:
        return None
    shape, out_shape = v.aval.shape, eqn.outvars[0].aval.shape
    in_reg, out_reg, config, visible = [], [], [], []
    for d, ((s, n), (lo, hi, interior)) in enumerate(zip(_reg(r), eqn.params["padding_config"], strict=True)):
        if s is not None and n == 1:
            q = lo + s * (interior + 1)
            visible.append((q >= 0) & (q < out_shape[d]))
            in_reg.append((s, 1)), out_reg.append((jnp.clip(q, 0, out_shape[d] - 1), 1)), config.append((0, 0, 0))
        else:
            in_reg.append((None, shape[d])), out_reg.append((None, out_shape[d])), config.append((lo, hi, interior))
    out = _bind(eqn, [run.region(v, r, in_reg), run.value(pv)], padding_config=tuple(config))[0]
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
        for d, (s, n) in enumerate(_reg(r)):
            pos = (0 if s is None else s) + lax.broadcasted_iota(
                jnp.int32, tuple(n if e == d else 1 for e in range(len(shape))), d
            )
            inside = inside & (pos >= starts[d]) & (pos < starts[d] + ushape[d])
        theta_out = run.region(eqn.outvars[0], None, _reg(r))
        return [Box(r.starts, lax.select(jnp.broadcast_to(inside, r.new.shape), theta_out, r.new.astype(theta_out.dtype)))]
    r = reps[1]  # the update changed: it lands at the update's place
    reg = _reg(r) if isinstance(r, Box) else _full(ushape)
    new = r.new if isinstance(r, Box) else r
    out_starts = [
        None if s is None and n == shape[d] else st + (0 if s is None else s)
        for d, ((s, n), st) in enumerate(zip(reg, starts, strict=True))
    ]
    return [_box(out_starts, new.astype(eqn.outvars[0].aval.dtype))]


def _gather(run, eqn, reps):
    (v, ind), r = eqn.invars, reps[0]
    if not isinstance(r, Box) or reps[1] is not None:
        return None
    dn, sizes, shape = eqn.params["dimension_numbers"], list(eqn.params["slice_sizes"]), v.aval.shape
    offset_axes = [a for a in range(len(shape)) if a not in dn.collapsed_slice_dims and a not in dn.operand_batching_dims]
    in_reg, out_reg = _full(shape), _full(eqn.outvars[0].aval.shape)
    for k, a in enumerate(offset_axes):
        if a not in dn.start_index_map and sizes[a] == shape[a] and r.starts[a] is not None:
            in_reg[a] = out_reg[dn.offset_dims[k]] = _reg(r)[a]
            sizes[a] = in_reg[a][1]
    if all(s is None for s, _ in out_reg):
        return None
    out = _bind(eqn, [run.region(v, r, in_reg), run.value(ind)], slice_sizes=tuple(sizes))[0]
    return [_box([s for s, _ in out_reg], out)]


def _scatter(run, eqn, reps):
    if len(eqn.invars) != 3 or reps[1] is not None or _changed_boxes(reps) is None:
        return None
    (v, ind, u), (rv, _, ru) = eqn.invars, reps
    dn, shape, ushape = eqn.params["dimension_numbers"], v.aval.shape, u.aval.shape
    window_axes = [a for a in range(len(shape)) if a not in dn.inserted_window_dims and a not in dn.operand_batching_dims]
    in_reg, up_reg = _full(shape), _full(ushape)
    for k, a in enumerate(window_axes):
        ua = dn.update_window_dims[k]
        if a in dn.scatter_dims_to_operand_dims or ushape[ua] != shape[a]:
            continue
        windows = ([_reg(rv)[a]] if rv is not None else []) + ([_reg(ru)[ua]] if ru is not None else [])
        in_reg[a] = up_reg[ua] = _union(windows, shape[a])
    if all(s is None for s, _ in in_reg):
        return None
    out = _bind(eqn, [run.region(v, rv, in_reg), run.value(ind), run.region(u, ru, up_reg)])[0]
    return [_box([s for s, _ in in_reg], out)]


# ---------------------------------------------------------------- reductions and products


def _reduce(run, eqn, reps):
    (v,), r = eqn.invars[:1], reps[0]
    if len(eqn.invars) != 1 or not isinstance(r, Box):
        return None
    axes = {a % v.aval.ndim for a in eqn.params["axes"]}
    box = _reg(r)
    kept = [w for d, w in enumerate(box) if d not in axes]
    if eqn.primitive.name == "reduce_sum" and any(box[d][0] is not None for d in axes) and _inexact(r.new):
        delta = r.new - run.region(v, None, box)  # out + Σ(new − old) over the box
        out = run.region(eqn.outvars[0], None, kept) + _bind(eqn, [delta])[0]
    else:
        out = _bind(
            eqn,
            [run.region(v, r, [(None, n) if d in axes else w for d, (w, n) in enumerate(zip(box, v.aval.shape, strict=True))])],
        )[0]
    return [_box([s for s, _ in kept], out)]


def _order(side, mine, other):
    return [mine, other] if side == 0 else [other, mine]


def _dot_general(run, eqn, reps):
    if (reps[0] is None) == (reps[1] is None):
        return None
    side = 0 if reps[0] is not None else 1
    r = reps[side]
    if not isinstance(r, Box):
        return None
    (contract, batch) = eqn.params["dimension_numbers"]
    mc, mb, oc, ob = contract[side], batch[side], contract[1 - side], batch[1 - side]
    mine, other = eqn.invars[side], eqn.invars[1 - side]
    mshape, oshape = mine.aval.shape, other.aval.shape
    box = _reg(r)
    mfree = [box[d] for d in range(len(mshape)) if d not in mc and d not in mb]
    ofree = [(None, oshape[d]) for d in range(len(oshape)) if d not in oc and d not in ob]
    out_reg = [box[d] for d in mb] + (mfree + ofree if side == 0 else ofree + mfree)
    other_reg = _full(oshape)
    for k, d in enumerate(ob):
        other_reg[d] = box[mb[k]]
    if any(box[d][0] is not None for d in mc):  # a contracted window: out + (new − old)·other[window]
        if not _inexact(r.new):
            return None
        for k, d in enumerate(oc):
            other_reg[d] = box[mc[k]]
        delta = r.new - run.region(mine, None, box)
        out = run.region(eqn.outvars[0], None, out_reg) + _bind(eqn, _order(side, delta, run.region(other, None, other_reg)))[0]
    else:
        out = _bind(eqn, _order(side, r.new, run.region(other, None, other_reg)))[0]
    return [_box([s for s, _ in out_reg], out)]


def _conv(run, eqn, reps):
    p = eqn.params
    if (reps[0] is None) == (reps[1] is None) or p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        return None
    side = 0 if reps[0] is not None else 1
    r = reps[side]
    if not isinstance(r, Box):
        return None
    dn = p["dimension_numbers"]
    lhs, rhs, outvar = eqn.invars[0], eqn.invars[1], eqn.outvars[0]
    mine = eqn.invars[side]
    box = _reg(r)
    out_reg = _full(outvar.aval.shape)
    if side == 0:  # input: (batch, feature, spatial...)
        b_ax, f_ax = dn.lhs_spec[0], dn.lhs_spec[1]
        out_reg[dn.out_spec[0]] = box[b_ax]
        if box[f_ax][0] is not None:  # out + conv(new − old, kernel[in feature window])
            reg = _full(mine.aval.shape)
            reg[b_ax], reg[f_ax] = box[b_ax], box[f_ax]
            other_reg = _full(rhs.aval.shape)
            other_reg[dn.rhs_spec[1]] = box[f_ax]
            args = [run.region(mine, r, reg) - run.region(mine, None, reg), run.region(rhs, None, other_reg)]
        elif box[b_ax][0] is not None:  # recompute one batch window
            reg = _full(mine.aval.shape)
            reg[b_ax] = box[b_ax]
            args, other_reg = [run.region(mine, r, reg), run.value(rhs)], None
        else:
            return None
    else:  # kernel: (out feature, in feature, spatial...)
        o_ax, i_ax = dn.rhs_spec[0], dn.rhs_spec[1]
        out_reg[dn.out_spec[1]] = box[o_ax]
        if box[i_ax][0] is not None:  # out + conv(input[in feature window], new − old)
            reg = _full(mine.aval.shape)
            reg[o_ax], reg[i_ax] = box[o_ax], box[i_ax]
            other_reg = _full(lhs.aval.shape)
            other_reg[dn.lhs_spec[1]] = box[i_ax]
            args = [run.region(lhs, None, other_reg), run.region(mine, r, reg) - run.region(mine, None, reg)]
        elif box[o_ax][0] is not None:  # recompute one output feature window
            reg = _full(mine.aval.shape)
            reg[o_ax] = box[o_ax]
            args, other_reg = [run.value(lhs), run.region(mine, r, reg)], None
        else:
            return None
    if other_reg is not None:
        if not _inexact(r.new):
            return None
        out = run.region(outvar, None, out_reg) + _bind(eqn, args)[0]
    else:
        out = _bind(eqn, args)[0]
    return [_box([s for s, _ in out_reg], out)]


RULES = {
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "transpose": _transpose,
    "rev": _rev,
    "concatenate": _concatenate,
    "stack": _stack,
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
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "cumsum": _cumulative,
    "cumprod": _cumulative,
    "cummax": _cumulative,
    "cummin": _cumulative,
    "cumlogsumexp": _cumulative,
    "sort": _sort,
    "top_k": _top_k,
    "split": _split,
    "tile": _tile,
    "reduce_window_sum": _reduce_window,
    "reduce_window_max": _reduce_window,
    "reduce_window_min": _reduce_window,
    **{
        name: _reduce
        for name in "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin".split()
    },
}


def rule(name):
    """The sparse rule of a primitive, or None (dense evaluation)."""
    return _elementwise if name in ELEMENTWISE else RULES.get(name)


def point_loss(jaxpr, eqns, invar):
    """J as a function of (probe multi-index, new value of that entry of the leaf, base values).

    `eqns` are the equations downstream of `invar` (the leaf); `base` maps every other
    variable of `jaxpr` to its value at θ.
    """
    outvar = jaxpr.outvars[0]

    def run_loss(idx, value, base):
        run = _Run(base)
        shape = invar.aval.shape
        start = jnp.asarray(value, invar.aval.dtype).reshape((1,) * len(shape))
        env = {invar: _box([_i32(i) for i in idx], start) if shape else start.reshape(())}
        rep = lambda v: env.get(v) if isinstance(v, jcore.Var) else None  # noqa: E731
        for eqn in eqns:
            reps = [rep(v) for v in eqn.invars]
            f = rule(eqn.primitive.name)
            out = f(run, eqn, reps) if f is not None and any(r is not None for r in reps) else None
            if out is None:
                out = _bind(eqn, [run.dense(v, r) for v, r in zip(eqn.invars, reps, strict=True)])
            env.update(zip(eqn.outvars, out, strict=True))
        return run.dense(outvar, rep(outvar))

    return run_loss
