"""One comparison for every check: per-leaf decisions from each leaf's own scale and noise.

The entries of a check (one per coordinate, sampled coordinate, random direction, or
(direction, output) pair) come grouped: a group is a leaf of the params (or of the pair
layout of a JVP check). For entry i: numeric D_i, analytic A_i, and the bound b_i on the
error of D_i (`jgc/_measure.py`); d_i = |D_i − A_i| (0 at an accepted kink). Per group,
with S = ‖D‖ + ‖A‖ its own scale:

- **lower** = ‖(d − 2b)₊‖ / S: the part of the discrepancy that the finite differences
  cannot explain even at twice their bound — a proven error in the analytic values;
- **upper** = ‖d + b‖ / S: the largest relative error the analytic values can have;
- **noise** = ‖b‖ / S.

`tol` is both bars. A group **fails** when lower > tol: an error beyond what the finite
differences may carry and beyond the tolerance (a proven error below tol is reported,
never a failure). The bar is the group's own scale whatever the other groups hold: a
leaf whose gradient is small against the rest (a bias, a regularizer's share) fails on
a proven error beyond tol of its own values. It **passes** when it does not fail and
upper ≤ tol: the differences resolve the tolerance.
A group whose true gradient is ~0 cannot be resolved against its own scale; once nothing
more precise can be tried (`final`), or when neither the loss nor the analytic values
moved at all (a structural zero), it passes when its possible error is below tol of the
whole gradient's scale. Otherwise the group is **inconclusive**.

The check fails if a group fails, an analytic value is not finite or the loss is not
deterministic (a numeric value that is not finite — the loss is not finite at θ ± h —
leaves its entry unresolved); it passes when every group passes; else it is inconclusive. The classic
`rel_error` ‖D − A‖ / (‖D‖ + ‖A‖) is reported beside (overall and per group).

Written once for NumPy (host) and jax.numpy (under a trace); arrays may carry leading
batch axes, entries on the last axis. On concrete inputs the pipeline decides a failure
only after it was confirmed by a second measurement (`jgc/_resolve.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ._typing import Array


def segment_sum(xp, x, seg: np.ndarray, k: int):
    """Σ of x (..., e) over each of k groups; `seg` (e,) is sorted (entries grouped)."""
    if xp is np:
        out = np.zeros(x.shape[:-1] + (k,), x.dtype)
        if x.shape[-1]:
            starts = np.searchsorted(seg, np.arange(k))
            nonempty = np.bincount(seg, minlength=k) > 0
            sums = np.add.reduceat(x, np.minimum(starts, x.shape[-1] - 1), axis=-1)
            out[..., nonempty] = sums[..., nonempty]
        return out
    moved = xp.moveaxis(x, -1, 0)
    out = jax.ops.segment_sum(moved, xp.asarray(seg), num_segments=k, indices_are_sorted=True)
    return xp.moveaxis(out, 0, -1)


def rel(xp, num, den):
    safe = xp.where(den == 0, 1, den)
    return xp.where(den == 0, xp.where(num == 0, 0.0, xp.inf), num / safe).astype(num.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Groups:
    """Per group (..., k): the decision and its evidence."""

    rel_error: Array  # classic ‖D − A‖ / (‖D‖ + ‖A‖)
    lower: Array  # proven relative error (beyond twice the noise)
    upper: Array  # largest possible relative error
    noise: Array  # ‖b‖ / S
    passed: Array
    failed: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Decision:
    passed: Array
    failed: Array
    rel_error: Array
    groups: Groups


def decide(xp, m, seg: np.ndarray, k: int, sizes, tol, final, deterministic) -> Decision:
    """The verdict (see the module docstring).

    Args:
      m: the `Measured` entries (numeric, analytic, bound: (..., e); kink, known: (..., e) bool),
        in group order.
      seg: (e,) group of each entry (sorted); k: number of groups.
      sizes: (k,) coordinates each group stands for (its share of the whole gradient when
        only some of them were probed); counts are taken from `seg`.
      tol: the bar for a pass and for a failure (relative), per check (...).
      final: bool, or (k,) per group: nothing more precise can be tried (the RMS clause for
        groups whose gradient is ~0).
      deterministic: bool (...).
    """
    numeric, analytic, bound, kink, known = m.numeric, m.analytic, m.bound, m.kink, m.known
    dtype = numeric.dtype
    counts = np.bincount(seg, minlength=k).astype(np.float64)
    # a non-finite analytic value is a failure; a non-finite numeric one (the loss is not finite
    # at θ ± h) leaves its entry's bound unknown
    finite = xp.isfinite(numeric) & xp.isfinite(analytic)
    known = known & xp.isfinite(numeric)
    zero = xp.zeros_like(numeric)
    D, A = xp.where(finite, numeric, zero), xp.where(finite, analytic, zero)
    b = xp.where(finite, bound, zero)
    d = xp.where(kink, zero, xp.abs(D - A))
    cols = [
        (numeric - analytic) ** 2,  # non-finite values stay visible in rel_error
        D * D,
        A * A,
        xp.where(known, xp.maximum(d - 2 * b, 0), zero) ** 2,
        xp.where(known, (d + b) ** 2, xp.inf),
        b * b,
        (~xp.isfinite(analytic)).astype(dtype),
    ]
    # one segment sum for all of them: the program stays small whatever the number of groups
    sums = segment_sum(xp, xp.stack(cols, axis=-2), seg, k)
    raw2, n2, a2, ex2, up2, b2, nonfinite = (sums[..., i, :] for i in range(len(cols)))
    bad = nonfinite > 0
    S = xp.sqrt(n2) + xp.sqrt(a2)
    lower, upper, noise = rel(xp, xp.sqrt(ex2), S), rel(xp, xp.sqrt(up2), S), rel(xp, xp.sqrt(b2), S)
    # the whole gradient's scale, each group's sums weighted by the coordinates it stands for
    w = xp.asarray(np.asarray(sizes, np.float64) / np.maximum(counts, 1), dtype)
    norm = xp.sqrt(xp.sum(w * n2, axis=-1)) + xp.sqrt(xp.sum(w * a2, axis=-1))
    rms = norm / np.sqrt(max(1.0, float(np.sum(sizes))))
    tol = xp.asarray(tol, dtype)[..., None]
    failed_g = (lower > tol) | bad
    own = upper <= tol
    # tol of the whole gradient's per-coordinate scale, for this group's coordinates
    negligible = xp.sqrt(up2) <= tol * rms[..., None] * xp.asarray(np.sqrt(counts), dtype)
    # a group where neither the loss nor the analytic values moved at all is structurally zero
    still = (n2 == 0) & (a2 == 0)
    own = own | (negligible & (xp.asarray(final) | still))
    passed_g = own & ~failed_g
    deterministic = xp.asarray(deterministic)
    failed = xp.any(failed_g, axis=-1) | ~deterministic
    passed = xp.all(passed_g, axis=-1) & ~failed
    rel_error = rel(xp, xp.sqrt(xp.sum(w * raw2, axis=-1)), norm)
    groups = Groups(rel(xp, xp.sqrt(raw2), S), lower, upper, noise, passed_g, failed_g)
    return Decision(passed, failed, rel_error, groups)
