"""How wrong can a finite difference be? The loss's rounding level, truncation, kinks.

The error of a stencil's derivative D(h) has two parts:

- rounding: the loss values carry rounding noise of some absolute size ε_J (its *level*),
  which the stencil turns into ≈ ε_J·‖w‖₂/h. ε_J is measured, not assumed from the
  parameters' dtype: `level` estimates it from the loss at 9 equally spaced points a tiny
  step apart (the finite-difference table of Moré & Wild's ECnoise: the k-th differences
  of a smooth function vanish, those of noise do not), so a float64 check of a loss that
  computes in float32 inside sees float32 noise;
- truncation: D(h) − g ≈ c·h^p; the same stencil at 2h gives D(2h) − D(h) ≈ (2^p − 1)·c·h^p
  (Richardson), measured where it can change a verdict.

A probe's *bound* b = κ·(rounding std) + 2·(truncation estimate) is what the finite
difference alone may account for. A *kink* (the loss is not differentiable within the
stencil: ReLU at 0, max, abs) shows as one-sided derivatives (each extrapolated from h and
2h so that curvature cancels) that disagree beyond their noise; an analytic value between
them is a valid subgradient.

All functions take `xp` (NumPy on the host, jax.numpy under a trace) and arrays whose
leading axis is the probe; vector-valued functions (JVP/HVP checks) add a trailing
output axis.
"""

from __future__ import annotations

import math

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


def ec_layout(m: int):
    """(bases, offsets, the t of every (probe, offset) value) for a stencil with m offsets."""
    bases, offsets = EC_POINTS[m]
    t = np.outer(bases, offsets).reshape(-1)
    return np.asarray(bases), np.asarray(offsets), t


def ec_step(dtype, eps) -> float:
    """The base step of the noise probe: tiny for the function's smooth part (its 3rd differences
    ~δ³), large against ulp(θ), and a quarter of the stencil's step, so that a loss computing
    at a lower precision than θ (float32 inside) shows the rounding the stencil will see."""
    return float(max(np.sqrt(np.finfo(dtype).eps), np.asarray(eps) / 4))


def level(xp, table, t, center):
    """Noise std of the loss from values at points t·δ, t ∈ {±1..±4} (with J(θ) at t = 0).

    Args:
      table: (probes, offsets[, out]) values at t (flattened as `t` says).
      t: the multiple of δ for each flattened value (NumPy).
      center: J(θ) ([out]).

    Returns the median over k = 3..6 of √(γ_k · mean((Δ^k f)²)), γ_k = (k!)²/(2k)!: for
    noise of std σ each is an estimate of σ; the smooth part's k-th differences are ~δ^k.
    """
    flat = table.reshape((-1,) + table.shape[2:])
    order = np.argsort(t)
    t_sorted = t[order]
    split = int(np.searchsorted(t_sorted, 0))
    rows = [flat[int(i)] for i in order[:split]] + [center] + [flat[int(i)] for i in order[split:]]
    f = xp.real(xp.stack(rows))
    ests = []
    for k in range(1, 7):
        f = f[1:] - f[:-1]
        if k >= 3:
            gamma = math.factorial(k) ** 2 / math.factorial(2 * k)
            ests.append(xp.sqrt(gamma * xp.mean(f * f, axis=0)))
    ests = xp.sort(xp.stack(ests), axis=0)
    return 0.5 * (ests[1] + ests[2])


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


def kinks(xp, stencil: Stencil, v1, v2, center, h, A, D, bound, eps_j, floor, scale):
    """Per probe: the loss is not differentiable within the stencil and A is a valid subgradient.

    Returns (kink, bound): kink where the one-sided derivatives, each extrapolated from h
    and 2h, differ beyond twice their noise margin (and beyond the verdict's relative
    floor) and A lies between them within the margin; the bound of a kink entry is the
    rounding of the one-sided derivatives alone (the Richardson "truncation" across a
    kink measures the jump, not an error of A, which is a valid subgradient).
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
    matters = floor * (xp.abs(D) + xp.abs(A) + scale)
    lo, hi = xp.minimum(right, left) - margin, xp.maximum(right, left) + margin
    kink = (xp.abs(jump) > 2 * margin + matters) & (A >= lo) & (A <= hi)
    return kink, one_sided
