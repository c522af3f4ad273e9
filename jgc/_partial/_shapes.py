"""Box rules, shape operations: the box moves to its new axes.

`broadcast_in_dim` (broadcast axes whole), `reshape` (per group of axes of equal size, a box
that is a contiguous range maps to a box of the output; a group that does not becomes
whole), `squeeze`, `transpose`, `rev`, `concatenate` and `stack` (one changed operand
windowed on the axis moves by its offset; else the axis is whole). Values inside the box
are computed with the equation's own primitive on the box's region.
"""

from __future__ import annotations

import numpy as np
from jax import lax

from ._box import Box, bind, boxed, changed_boxes, i32, region_of, union, whole


def _broadcast_in_dim(run, eqn, reps):
    (v,), (r,) = eqn.invars[:1], reps[:1]
    if len(eqn.invars) != 1 or not isinstance(r, Box):
        return None
    shape, out_shape, dims = v.aval.shape, eqn.params["shape"], eqn.params["broadcast_dimensions"]
    in_reg, out_reg = whole(shape), whole(out_shape)
    for i, j in enumerate(dims):
        if shape[i] == out_shape[j] and r.starts[i] is not None:
            in_reg[i] = out_reg[j] = region_of(r)[i]
    out = bind(eqn, [run.region(v, r, in_reg)], shape=tuple(n for _, n in out_reg))[0]
    return [boxed([s for s, _ in out_reg], out)]


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
    in_reg, out_reg = whole(src), whole(dst)
    box = region_of(r)
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
    out = bind(eqn, [run.region(v, r, in_reg)], new_sizes=tuple(n for _, n in out_reg), dimensions=None)[0]
    return [boxed([s for s, _ in out_reg], out)]


def _squeeze(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    dims = {d % len(r.starts) for d in eqn.params["dimensions"]}
    return [boxed([s for d, s in enumerate(r.starts) if d not in dims], bind(eqn, [r.new])[0])]


def _transpose(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    return [boxed([r.starts[p] for p in eqn.params["permutation"]], bind(eqn, [r.new])[0])]


def _rev(run, eqn, reps):
    r = reps[0]
    if not isinstance(r, Box):
        return None
    shape, dims = eqn.invars[0].aval.shape, eqn.params["dimensions"]
    starts = [s if s is None or d not in dims else shape[d] - s - n for d, (s, n) in enumerate(region_of(r))]
    return [boxed(starts, bind(eqn, [r.new])[0])]


def _joined(reps, shape):
    """The union of the changed operands' regions over `shape`, and which operands changed (None: none did)."""
    changed = changed_boxes(reps)
    if changed is None:
        return None
    reg = [union([region_of(r)[d] for r in changed], n) for d, n in enumerate(shape)]
    return reg, [i for i, r in enumerate(reps) if r is not None]


def _concatenate(run, eqn, reps):
    joined = _joined(reps, eqn.outvars[0].aval.shape)
    if joined is None:
        return None
    (reg, where), axis = joined, eqn.params["dimension"]
    if len(where) == 1 and reps[where[0]].starts[axis] is not None:
        i, r = where[0], reps[where[0]]
        offset = sum(v.aval.shape[axis] for v in eqn.invars[:i])
        reg[axis] = region_of(r)[axis]
        new = run.region(eqn.invars[i], r, reg)
        # the start on `axis` is not None (checked above): the window moves by the offset of operand i
        return [boxed([s + offset if d == axis else s for d, (s, _) in enumerate(reg)], new)]  # pyright: ignore[reportOptionalOperand]
    args = [
        run.region(v, r, [(None, v.aval.shape[d]) if d == axis else reg[d] for d in range(len(reg))])
        for v, r in zip(eqn.invars, reps, strict=True)
    ]
    return [boxed([None if d == axis else s for d, (s, _) in enumerate(reg)], bind(eqn, args)[0])]


def _stack(run, eqn, reps):
    joined = _joined(reps, eqn.invars[0].aval.shape)
    if joined is None:
        return None
    (reg, where), axis = joined, eqn.params["axis"]
    starts = [s for s, _ in reg]
    if len(where) == 1:
        new = lax.expand_dims(run.region(eqn.invars[where[0]], reps[where[0]], reg), (axis,))
        return [boxed(starts[:axis] + [i32(where[0])] + starts[axis:], new)]
    args = [run.region(v, r, reg) for v, r in zip(eqn.invars, reps, strict=True)]
    return [boxed(starts[:axis] + [None] + starts[axis:], bind(eqn, args)[0])]


RULES = {
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "transpose": _transpose,
    "rev": _rev,
    "concatenate": _concatenate,
    "stack": _stack,
}
