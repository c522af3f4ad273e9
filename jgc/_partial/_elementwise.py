"""Box rules, elementwise primitives: the union of the operands' boxes.

An elementwise primitive's operands have the output's shape, size-1 axes (JAX broadcasts
them implicitly: `add f32[4,6] f32[4,1]`), or rank 0. Each output entry reads the same
entry of every operand, so the output's box is the union of the changed operands' boxes,
made whole on an axis where they disagree or where a changed operand has size 1 and the
output does not (its change spreads along that axis). Other shapes: dense evaluation.
"""

from __future__ import annotations

from ._box import bind, boxed, changed_boxes, region_of, union

# Primitives applied entry by entry: operands of the output's shape, size-1 axes, or rank 0.
ELEMENTWISE = frozenset(
    """abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp conj convert_element_type copy
    copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag integer_pow is_finite
    le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real reduce_precision rem round
    rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor""".split()
)


def elementwise(run, eqn, reps):
    out_shape = eqn.outvars[0].aval.shape
    shapes = [tuple(v.aval.shape) for v in eqn.invars]
    if any(
        len(s) not in (0, len(out_shape)) or (s and any(a not in (1, b) for a, b in zip(s, out_shape, strict=True)))
        for s in shapes
    ):
        return None
    if changed_boxes(reps) is None or len(eqn.outvars) != 1:
        return None
    reg = []
    for d, size in enumerate(out_shape):
        windows = []
        for s, r in zip(shapes, reps, strict=True):
            if r is not None:  # a box has rank ≥ 1, so s has the output's rank
                windows.append((None, size) if s[d] != size else region_of(r)[d])
        reg.append(union(windows, size))
    args = []
    for v, s, r in zip(eqn.invars, shapes, reps, strict=True):
        if not s:
            args.append(run.value(v))
        else:  # a size-1 axis broadcast by the primitive stays whole (size 1)
            args.append(run.region(v, r, [(None, 1) if a != b else w for a, b, w in zip(s, out_shape, reg, strict=True)]))
    return [boxed([s for s, _ in reg], bind(eqn, args)[0])]


RULES = dict.fromkeys(ELEMENTWISE, elementwise)
