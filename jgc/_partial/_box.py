"""The box: how little of a value a one-entry change of a leaf changed.

A value downstream of the changed leaf is represented, while the sparse path evaluates
(`_sparse.point_loss`), by one of

- a `Box`: per axis, either the whole axis or a window (a traced start, a static size);
  the values inside the box are stored, every entry outside it equals the value at θ.
  The leaf itself starts as a box of one entry at the probe's multi-index;
- a dense array: everything may have changed;
- `None`: unchanged (the value at θ, read from the base evaluation).

A *region* is a list of (start or None, size) per axis (`region_of(box)`, `whole(shape)`);
`Run.region` reads the entries of a value's new version in a region, `Run.dense` its whole
new version. Windows always lie inside their axis (0 ≤ start ≤ size of the axis − size of
the window), so writing a box in never clamps. The rules of the families (`_elementwise`,
`_shapes`, `_indexing`, `_reductions`, `_contractions`) are built from these pieces.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from .. import _jaxpr


@dataclasses.dataclass(frozen=True)
class Box:
    starts: tuple  # per axis: None (the whole axis) or a traced int32 scalar (a window's first index)
    new: Any  # the values inside the box: per axis the window's size, or the axis' size


def boxed(starts, new):
    """A box, or the dense array itself when the box covers every axis."""
    starts = tuple(starts)
    return Box(starts, new) if any(s is not None for s in starts) else new


def region_of(box) -> list[tuple[Any, int]]:
    return [(s, n) for s, n in zip(box.starts, jnp.shape(box.new), strict=True)]


def whole(shape) -> list[tuple[Any, int]]:
    """A region covering every axis whole: (start, size) per axis, start None for a whole axis."""
    return [(None, n) for n in shape]


def _same(a, b):
    return a[0] is b[0] and a[1] == b[1]


def union(windows, size):
    """One window if every changed operand has the same one, else the whole axis."""
    if not windows or any(w[0] is None for w in windows) or any(not _same(w, windows[0]) for w in windows):
        return (None, size)
    return windows[0]


bind = _jaxpr.bind  # one equation, evaluated with its primitive


def i32(x):
    return jnp.asarray(x, jnp.int32)


def select(pred, a, b):
    return lax.select(jnp.broadcast_to(pred, jnp.shape(a)), a, b)


def inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


class Run:
    """One evaluation of the downstream equations: values at θ are read from `base`."""

    def __init__(self, base):
        self.base = base

    def value(self, v):
        return v.val if isinstance(v, jcore.Literal) else self.base[v]

    def dense(self, v, r):
        if r is None:
            return self.value(v)
        if isinstance(r, Box):
            starts = [i32(0) if s is None else s for s in r.starts]
            return lax.dynamic_update_slice(self.value(v), r.new.astype(v.aval.dtype), starts)
        return r

    def region(self, v, r, reg):
        """The entries of v's new value in `reg` (per axis (start or None, size))."""
        if r is not None and not isinstance(r, Box):
            x = r
        elif r is None or any(
            rs is not None and bs is not None and not _same((rs, rn), (bs, bn))
            for (rs, rn), (bs, bn) in zip(reg, region_of(r), strict=True)
        ):
            x = self.dense(v, r)
        else:  # the box lies inside the region's windows: slice its full axes, write it into θ's values
            new = r.new
            for d, ((rs, rn), (bs, _)) in enumerate(zip(reg, region_of(r), strict=True)):
                if rs is not None and bs is None:
                    new = lax.dynamic_slice_in_dim(new, rs, rn, d)
            if all(rs is not None or bs is None for (rs, _), bs in zip(reg, r.starts, strict=True)):
                return new
            x = self.region(v, None, reg)
            offsets = [i32(0 if rs is not None or bs is None else bs) for (rs, _), bs in zip(reg, r.starts, strict=True)]
            return lax.dynamic_update_slice(x, new.astype(x.dtype), offsets)
        if all(s is None for s, _ in reg):
            return x
        return lax.dynamic_slice(jnp.asarray(x, v.aval.dtype), [i32(0 if s is None else s) for s, _ in reg], [n for _, n in reg])


def changed_boxes(reps):
    """The changed operands, or None when one of them changed densely."""
    changed = [r for r in reps if r is not None]
    return changed if all(isinstance(r, Box) for r in changed) else None
