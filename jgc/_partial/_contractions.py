"""Box rules, contractions: `dot_general` and `conv_general_dilated`.

One changed operand (two: dense evaluation).

- `dot_general`: windows on free and batch axes pass to the output; a window on a
  contracted axis gives the low-rank update out + (new − old)·other[window];
- `conv_general_dilated` (no feature or batch groups): a window on the kernel's output
  feature recomputes those output features; a window on the kernel's input feature or on
  the input's feature gives out + conv(new − old, other[feature window]); a window on the
  input's batch recomputes those examples. A change windowed only spatially: dense.
"""

from __future__ import annotations

from ._box import Box, bind, boxed, inexact, region_of, whole


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
    box = region_of(r)
    mfree = [box[d] for d in range(len(mshape)) if d not in mc and d not in mb]
    ofree = [(None, oshape[d]) for d in range(len(oshape)) if d not in oc and d not in ob]
    out_reg = [box[d] for d in mb] + (mfree + ofree if side == 0 else ofree + mfree)
    other_reg = whole(oshape)
    for k, d in enumerate(ob):
        other_reg[d] = box[mb[k]]
    if any(box[d][0] is not None for d in mc):  # a contracted window: out + (new − old)·other[window]
        if not inexact(r.new):
            return None
        for k, d in enumerate(oc):
            other_reg[d] = box[mc[k]]
        delta = r.new - run.region(mine, None, box)
        out = run.region(eqn.outvars[0], None, out_reg) + bind(eqn, _order(side, delta, run.region(other, None, other_reg)))[0]
    else:
        out = bind(eqn, _order(side, r.new, run.region(other, None, other_reg)))[0]
    return [boxed([s for s, _ in out_reg], out)]


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
    box = region_of(r)
    out_reg = whole(outvar.aval.shape)
    if side == 0:  # input: (batch, feature, spatial...)
        b_ax, f_ax = dn.lhs_spec[0], dn.lhs_spec[1]
        out_reg[dn.out_spec[0]] = box[b_ax]
        if box[f_ax][0] is not None:  # out + conv(new − old, kernel[in feature window])
            reg = whole(mine.aval.shape)
            reg[b_ax], reg[f_ax] = box[b_ax], box[f_ax]
            other_reg = whole(rhs.aval.shape)
            other_reg[dn.rhs_spec[1]] = box[f_ax]
            args = [run.region(mine, r, reg) - run.region(mine, None, reg), run.region(rhs, None, other_reg)]
        elif box[b_ax][0] is not None:  # recompute one batch window
            reg = whole(mine.aval.shape)
            reg[b_ax] = box[b_ax]
            args, other_reg = [run.region(mine, r, reg), run.value(rhs)], None
        else:
            return None
    else:  # kernel: (out feature, in feature, spatial...)
        o_ax, i_ax = dn.rhs_spec[0], dn.rhs_spec[1]
        out_reg[dn.out_spec[1]] = box[o_ax]
        if box[i_ax][0] is not None:  # out + conv(input[in feature window], new − old)
            reg = whole(mine.aval.shape)
            reg[o_ax], reg[i_ax] = box[o_ax], box[i_ax]
            other_reg = whole(lhs.aval.shape)
            other_reg[dn.lhs_spec[1]] = box[i_ax]
            args = [run.region(lhs, None, other_reg), run.region(mine, r, reg) - run.region(mine, None, reg)]
        elif box[o_ax][0] is not None:  # recompute one output feature window
            reg = whole(mine.aval.shape)
            reg[o_ax] = box[o_ax]
            args, other_reg = [run.value(lhs), run.region(mine, r, reg)], None
        else:
            return None
    if other_reg is not None:
        if not inexact(r.new):
            return None
        out = run.region(outvar, None, out_reg) + bind(eqn, args)[0]
    else:
        out = bind(eqn, args)[0]
    return [boxed([s for s, _ in out_reg], out)]


RULES = {"dot_general": _dot_general, "conv_general_dilated": _conv}
