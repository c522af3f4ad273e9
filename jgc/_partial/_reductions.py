"""Box rules, reductions and the primitives that mix along some axes.

- `reduce_*`, `argmax`, `argmin`: kept axes keep their window; the reduced axes are
  recomputed whole, except for `reduce_sum` of an inexact dtype, which adds Σ(new − old)
  over the box to θ's output;
- `cumsum`-like scans, `sort`, `top_k`, `split`, `tile`, `reduce_window_*` (pooling):
  windows on the axes they do not mix pass through, the mixed axes are recomputed whole
  (`_axiswise`).
"""

from __future__ import annotations

from ._box import Box, bind, boxed, changed_boxes, inexact, region_of, union


def _axiswise(run, eqn, reps, mixed):
    """An equation whose outputs, along every axis not in `mixed`, read only the same index."""
    if changed_boxes(reps) is None:
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
        reg[d] = union([region_of(r)[d] for r in reps if r is not None], shapes[0][d])
    args = [
        run.region(v, r, [(None, s[d]) if d in mixed else reg[d] for d in range(nd)])
        for v, r, s in zip(eqn.invars, reps, shapes, strict=True)
    ]
    outs = bind(eqn, args)
    return [boxed([None if d in mixed else reg[d][0] for d in range(nd)], o) for o in outs]


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


def _reduce(run, eqn, reps):
    (v,), r = eqn.invars[:1], reps[0]
    if len(eqn.invars) != 1 or not isinstance(r, Box):
        return None
    axes = {a % v.aval.ndim for a in eqn.params["axes"]}
    box = region_of(r)
    kept = [w for d, w in enumerate(box) if d not in axes]
    if eqn.primitive.name == "reduce_sum" and any(box[d][0] is not None for d in axes) and inexact(r.new):
        delta = r.new - run.region(v, None, box)  # out + Σ(new − old) over the box
        out = run.region(eqn.outvars[0], None, kept) + bind(eqn, [delta])[0]
    else:
        out = bind(
            eqn,
            [run.region(v, r, [(None, n) if d in axes else w for d, (w, n) in enumerate(zip(box, v.aval.shape, strict=True))])],
        )[0]
    return [boxed([s for s, _ in kept], out)]


RULES = {
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
