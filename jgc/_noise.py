"""How wrong can a finite difference be? The loss's rounding level, truncation, kinks, determinism.

The error of a stencil's derivative D(h) has two parts:

- rounding: the loss values carry rounding noise of some absolute size ε_J (its *level*),
  which the stencil turns into ≈ ε_J·‖w‖₂/h. ε_J is measured, not assumed from the
  parameters' dtype: `level` estimates it from the loss at 9 equally spaced points a tiny
  step apart (the finite-difference table of Moré & Wild's ECnoise: the k-th differences
  of a smooth function vanish, those of noise do not). It is measured along several
  coordinates — the ones the gradient says matter most, the largest |θ_j| (large
  arguments), the middle of the largest leaf — and the *largest* estimate is kept, so a
  coordinate the loss does not depend on (a dead unit) cannot hide the rounding of the
  rest. Each coordinate is also read at a 32× larger spacing: a staircase coarser than the
  near spacing (a saturating term, bfloat16 inside) shows there as noise, and the wide
  table counts where it reads as noise (its orders agree) or the near one is all ties;
- truncation: D(h) − g ≈ c·h^p; the same stencil at 2h gives D(2h) − D(h) ≈ (2^p − 1)·c·h^p
  (Richardson), measured where it can change a verdict.

A probe's *bound* b = κ·(rounding std) + 2·(truncation estimate) is what the finite
difference alone may account for. A *kink* (the loss is not differentiable within the
stencil: ReLU at 0, max, abs) shows as one-sided derivatives (each extrapolated from h and
2h so that curvature cancels) that disagree beyond their noise; an analytic value between
them is a valid subgradient. A loss whose jaxpr holds no non-smooth operation
(`jgc/_jaxpr.py`) has no kinks: there a disagreement of the one-sided derivatives widens
the bound instead.

Determinism is read from identical evaluations: the first chunk of probes is evaluated
twice by the same compiled program, which on CPU gives bit-identical values for a
deterministic loss; any difference is randomness (`spread`).

All functions take `xp` (NumPy on the host, jax.numpy under a trace) and arrays whose
leading axis is the probe; vector-valued functions (JVP/HVP checks) add a trailing
output axis.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from ._stencils import Stencil

# A rounding std is turned into a bound by this factor (a 4σ event per probe is rare; the
# verdict asks for twice the bound before it calls a discrepancy proven).
KAPPA = 4.0

# ECnoise: (base multipliers, offsets) per number of stencil offsets m, so that the
# points t·δ cover t = ±1, ±2, ±3, ±4 (with J(θ) at t = 0) through the one compiled
# probe program, whose offsets array has m entries.
EC_POINTS = {
    1: ((1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0), (1.0,)),
    2: ((1.0, 2.0, 3.0, 4.0), (1.0, -1.0)),
    4: ((1.0, -1.0), (1.0, 2.0, 3.0, 4.0)),
}

# The noise table is read at two spacings: δ and WIDE·δ (for a staircase seen from too close).
WIDE = 32.0
# A table is a staircase when at least this share of its consecutive differences is exactly 0.
TIES = 0.25


def ec_layout(m: int):
    """(bases, offsets, the t of every (probe, offset) value) for a stencil with m offsets."""
    bases, offsets = EC_POINTS[m]
    t = np.outer(bases, offsets).reshape(-1)
    return np.asarray(bases), np.asarray(offsets), t


def ec_step(u: float, eps) -> float:
    """The base step δ of the noise probe: tiny for the function's smooth part (its 3rd
    differences ~δ³), large against the rounding unit u of the precision the loss computes
    in, and a quarter of the stencil's step, so that a loss computing at a lower precision
    than θ shows the rounding the stencil will see."""
    return float(max(np.sqrt(u), np.asarray(eps) / 4))


def wide_step(delta: float, t) -> float:
    """The wide table's spacing: WIDE·δ, but no table point farther than 1 from θ_j (the unit the
    steps are relative to): beyond it a table measures the loss's shape, not its rounding (a
    bfloat16 loss's δ = 0.05 would put points at ±6.4 and read the curvature of its smooth part
    as a rounding level of 7·|J|). float32 and float64 tables stay within it (central: ±0.096 and
    ±3.2e-5); only the coarse steps of float16/bfloat16 losses are capped, where the near table at
    δ = h/4 already sees their rounding."""
    return float(max(delta, min(WIDE * delta, 1.0 / float(np.max(np.abs(t))))))


def _table(xp, table, t, center):
    """The values at t = −4..4 (J(θ) at 0) in order, real part: (9, …)."""
    flat = table.reshape((-1,) + table.shape[2:])
    order = np.argsort(t)
    split = int(np.searchsorted(t[order], 0))
    rows = [flat[int(i)] for i in order[:split]] + [center] + [flat[int(i)] for i in order[split:]]
    return xp.real(xp.stack(rows))


def _ec(xp, f, orders, consistent=False):
    """ECnoise on the ordered values f (points, …): the median-ish of √(γ_k · mean((Δ^k f)²)) over
    `orders`; with `consistent`, also whether the orders agree within a factor 4 (Moré & Wild's test
    that the table is noise: a smooth part's k-th differences fall off with k)."""
    ests = []
    d = f
    for k in range(1, max(orders) + 1):
        d = d[1:] - d[:-1]
        if k in orders:
            gamma = math.factorial(k) ** 2 / math.factorial(2 * k)
            ests.append(xp.sqrt(gamma * xp.mean(d * d, axis=0)))
    ests = xp.sort(xp.stack(ests), axis=0)
    n = len(orders)
    est = 0.5 * (ests[(n - 1) // 2] + ests[n // 2])
    if not consistent:
        return est
    return est, ests[-1] <= 4 * ests[0]


def level(xp, table, t, center):
    """(noise std estimate, share of tied neighbours, whether the table reads as noise) from values
    at t·δ, t ∈ {±1..±4}.

    Args:
      table: (probes, offsets[, out]) values at t (flattened as `t` says).
      t: the multiple of δ for each flattened value (NumPy).
      center: J(θ) ([out]).

    The estimate is ECnoise's: the median over k = 3..6 of √(γ_k · mean((Δ^k f)²)),
    γ_k = (k!)²/(2k)!: for noise of std σ each is an estimate of σ; the smooth part's k-th
    differences are ~δ^k. A kink at θ itself (a ReLU whose pre-activation is exactly 0) makes
    every difference across t = 0 large; each half of the table (t = −4..0 and 0..4, k = 3, 4)
    is smooth then, so the estimate is the smaller of the whole table's and the larger half's.
    """
    f = _table(xp, table, t, center)
    first = f[1:] - f[:-1]
    ties = xp.mean((first == 0).astype(f.dtype), axis=0)
    whole, noise_like = _ec(xp, f, (3, 4, 5, 6), consistent=True)
    halves = xp.maximum(_ec(xp, f[:5], (3, 4)), _ec(xp, f[4:], (3, 4)))
    return xp.minimum(whole, halves), ties, noise_like


def combine_levels(xp, per_coordinate, wide: bool = True):
    """ε_J from the (near, wide) `level`s of each probed coordinate: the near table's, or, where
    `wide` allows it, the wide table's where that is larger and reads as noise (a staircase coarser
    than the near spacing — a term that saturates, a lower precision inside — shows only there) or
    where the near table is itself a staircase; the largest over the coordinates is kept. `wide`
    is off for a loss that may have kinks and computes in θ's precision: at the wide spacing its
    kinks, which read like noise to ECnoise, would be taken for rounding. A coordinate along which
    the loss is not finite near θ (sqrt or log at θ − h < 0) tells nothing about rounding and is
    left out; NaN when no coordinate is left (every bound unknown: nothing can be decided)."""
    picks = []
    for (near, near_ties, _), (far, _, far_noise) in per_coordinate:
        picks.append(xp.where(((near_ties >= TIES) | far_noise) & wide, xp.maximum(near, far), near))
    picks = xp.stack(picks)
    best = xp.max(xp.where(xp.isfinite(picks), picks, -xp.inf), axis=0)
    return xp.where(xp.isfinite(best), best, xp.nan).astype(picks.dtype)


def derivative(xp, stencil: Stencil, values, center, h, scale: float = 1.0):
    """D at step scale·h: (Σ w_k g(o_k·scale·h) + c·g(0)) / (scale·h); values (P, m[, out])."""
    w = np.asarray(stencil.weights)
    full = {} if xp is np else {"precision": "highest"}  # not at a lowered jax_default_matmul_precision
    if stencil.complex:
        total = xp.real(xp.tensordot(values, w.astype(values.dtype), axes=([1], [0]), **full))
    else:
        total = xp.tensordot(xp.real(values), w.astype(xp.real(values).dtype), axes=([1], [0]), **full)
        total = total + stencil.center * _row(xp, xp.real(center), total)
    return total / _col(xp, scale * h, total)


def _col(xp, h, like):
    """Per-probe values (P,) shaped to broadcast against (P[, out])."""
    return xp.reshape(h, h.shape + (1,) * (like.ndim - h.ndim))


def _row(xp, x, like):
    """Per-output values ([out]) shaped to broadcast against (P[, out]) (explicit ranks, for strict JAX)."""
    x = xp.asarray(x)
    return xp.reshape(x, (1,) * (like.ndim - x.ndim) + x.shape)


def rounding(xp, stencil: Stencil, eps_j, rel_j, D, h):
    """Per probe: a bound (κσ) on the rounding error of D(h).

    Real stencils: κ·ε_J·‖w‖₂/h. The complex step has no cancellation: its error is the
    loss's relative rounding level times |D|.
    """
    if stencil.complex:
        return KAPPA * _row(xp, rel_j, D) * xp.abs(D)
    return KAPPA * stencil.noise_gain * _row(xp, eps_j, D) / _col(xp, h, D)


def truncation(xp, stencil: Stencil, D, D2):
    """Richardson: the truncation error of D(h) from D(2h) − D(h) = (2^p − 1)·c·h^p."""
    return xp.abs(D2 - D) / (2**stencil.order - 1)


def kinks(xp, stencil: Stencil, v1, v2, center, h, A, D, bound, eps_j, tol, scale, smooth: bool, trunc=None):
    """Per probe: (kink, rough, bound), from the one-sided derivatives, each extrapolated from h
    and 2h (so that curvature cancels), with their noise margin.

    For a loss that may have kinks, an analytic value between the one-sided derivatives
    (within the margin) is consistent with a subgradient, so nothing about it is proven: its
    bound widens to the discrepancy. Where the one-sided derivatives also *disagree* (beyond
    twice their margin and beyond what matters at `tol`) it is a `kink`: A is a valid
    subgradient (the bound is then the one-sided derivatives' rounding: the Richardson
    "truncation" across a kink measures the jump, not an error of A). A outside disagreeing
    one-sided derivatives is `rough`: the stencil may straddle several kinks, so what it says
    about A is proven only once re-measured at another step — unless D(h) and D(2h) agree within
    their rounding (`trunc` small): a single kink at θ itself, whose one-sided derivatives are
    exact, and then A's distance from them (beyond the margin) is proven. For a `smooth` loss a
    disagreement is an error of the finite differences themselves: the bound grows by half
    the jump, and there are no kinks.
    """
    g = {}
    for off, vals in ((stencil.offsets, v1), (stencil.doubled, v2)):
        for k, o in enumerate(off):
            g.setdefault(o, xp.real(vals[:, k]))
    g0 = _row(xp, xp.real(center), D)
    hh = _col(xp, h, D)
    right = (2 * g[1.0] - 1.5 * g0 - 0.5 * g[2.0]) / hh
    left = (1.5 * g0 - 2 * g[-1.0] + 0.5 * g[-2.0]) / hh
    jump = right - left
    # each side keeps √(4 + 2.25 + 0.25) ≈ 2.55 of the values' rounding, per 1/h
    one_sided = KAPPA * 2.55 * _row(xp, eps_j, D) / hh
    margin = bound + one_sided
    matters = _row(xp, tol, D) * (xp.abs(D) + xp.abs(A) + scale)
    apart = xp.abs(jump) > 2 * margin + matters
    if smooth:
        no = xp.zeros(D.shape, bool)
        return no, no, xp.where(apart, xp.maximum(bound, 0.5 * xp.abs(jump)), bound)
    lo, hi = xp.minimum(right, left) - margin, xp.maximum(right, left) + margin
    inside = (A >= lo) & (A <= hi)
    kink = apart & inside
    widened = xp.where(inside, xp.maximum(bound, 0.5 * xp.abs(D - A)), bound)
    outside = apart & ~inside
    if trunc is not None:  # a single kink at θ: D(h) = D(2h) up to rounding, the one-sided slopes are exact
        single = outside & (trunc <= bound - 2 * trunc)
        far = xp.maximum(lo - A, A - hi)  # beyond the one-sided derivatives and their margin
        widened = xp.where(single, xp.maximum(0.5 * (xp.abs(D - A) - far), 0), widened)
        outside = outside & ~single
    return kink, outside, xp.where(kink, one_sided, widened)


def spread_limit(xp, values):
    """How far two evaluations of the same point by the same program may differ: nothing on
    CPU (XLA:CPU is deterministic for one program), a few ulps of the largest value elsewhere
    (GPU reductions may use atomics)."""
    v = xp.abs(xp.real(values))
    if jax.default_backend() == "cpu" or v.size == 0:
        return xp.zeros((), v.dtype)
    return 8 * float(np.finfo(v.dtype).eps) * xp.max(v)


def spread(xp, a, b):
    """The largest difference between two evaluations of the same points (inf where only one is
    finite or NaN; 0 where both are the same NaN)."""
    same = (a == b) | (xp.isnan(a) & xp.isnan(b))
    both = xp.isfinite(a) & xp.isfinite(b)
    d = xp.where(same, 0, xp.where(both, xp.abs(a - b), xp.inf))
    return xp.max(xp.real(d)) if d.size else xp.zeros((), xp.real(d).dtype)
