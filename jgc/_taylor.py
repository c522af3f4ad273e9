"""The Taylor remainder test: a verdict on a gradient (or an HVP) that does not depend on a step.

Along a direction h, the remainder of the order-m Taylor polynomial

    R(ε) = J(θ + εh) − J(θ) − ε⟨g, h⟩            (m = 1, a gradient g)
    R(ε) = … − ½ε²⟨h, H h⟩                         (m = 2, a Hessian-vector product)

falls like ε^(m+1) when the terms are right and like ε^m when the last one is wrong. On a
ladder ε_k = ε₀·2^-k (one `vmap` over every rung) the observed rates log₂(R_k / R_{k+1})
tell which. What the rungs can prove, and so the thresholds, comes from one identity:
with D_k = R_k − 2^m·R_{k+1} (for m = 1 the second difference J(θ+ε_k h) − 2J(θ+ε_{k+1}h)
+ J(θ), which does not involve g at all),

    rate_k = m − log₂(1 − D_k / R_k),      and, for right terms, R_k = Σ_n 2^{mn}·D_{k+n}.

If the loss is in its asymptotic regime — each D falls by at least 2^(m+½) per halving
from rung k on (assumption A; a smooth loss falls by 2^(m+1)) — right terms give
R_k = λ·D_k with λ ∈ [1/(1 + 2^-½), 1/(1 − 2^-½)] = [0.59, 3.41]: a rate ≥ m + ½.
A remainder that no λ in that band (widened by M = 2, jgc's "twice the bound") can
explain, within the rounding bounds of R_k and D_k, proves the last term wrong: the rate
is then ≈ m. Assumption A is itself checked on every rung below k where D is above its
rounding: where D is proven to fall slower (a loss not yet in its asymptotic regime,
wiggles at the ladder's scale, a remainder crossing zero), nothing is failed there.

- **failed**: proven on two consecutive rungs (a second measurement), or J(θ) or the
  analytic terms are not finite; for m = 2, also when the gradient's own remainder fails.
- **passed**: the last three consecutive resolved rungs (|R| above 4× its rounding bound)
  show two rates proven ≥ m + ½ (A consistent there); or, when fewer than three rungs
  lie above rounding (a loss linear along h to its rounding level), the error of the
  last term that the rungs still allow is within `tol` relative to the term.
- **inconclusive**: otherwise (too few rungs above rounding, rates between, A violated).

The rounding bound of each R_k is measured: the loss's noise σ from two ECnoise tables
(9 points δ apart, at θ and at the top rung; δ = the smallest rung / 8), κ = 4 standard
deviations per value, never less than one rounding of each J value, plus the proven
rounding of ε⟨g, h⟩ (a pairwise inner product, `jgc/_rounding.py`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _rounding, _signs, _tree, _validate
from ._report_rules import Outcome
from ._typing import Array, PyTree, Tracer

KAPPA = 4.0  # standard deviations of the loss's measured noise per value
RES = 4.0  # a rung is above rounding when |R| > RES × its rounding bound
M = 2.0  # margin on the band of λ a right remainder allows
GATE = 2.0**-0.5  # assumption A: D falls by at least 2^(m + ½) per halving, so D_{k+1}/D_k ≤ 2^-m · GATE
LAMBDA = (1 / (1 + GATE), 1 / (1 - GATE))  # R_k / D_k for right terms under A: [0.586, 3.414]
FAST = 2.0**-3  # ... and at most 2^-(m+3) faster per halving where D is resolved (else a zero crossing)
EC = 4  # ECnoise points each side (9 with the centre)

_EPS0 = {("float64", 1): -10, ("float64", 2): -6, ("float32", 1): -3, ("float32", 2): -1}  # log₂ ε₀
_TOL = {"float64": 1e-3, "float32": 1e-2}
# the first noise table's spacing (relative to h): many float32 ulps (a loss computing in float32
# inside float64 parameters shows its rounding), tiny for the smooth part
DELTA1 = {"float64": 2.0**-21, "float32": 2.0**-20}
PLAUSIBLE = 4096.0  # a rounding noise is at most this many roundings of the loss's value
STRUCTURE = 4.0  # the ladder-scale noise exceeds the fine one by this factor: structure, not rounding


def lower_precision(xp, dtype, sigma, center):
    """A loss of float64 parameters whose relative noise is nearer float32's rounding than float64's."""
    if jnp.dtype(dtype).name != "float64":
        return xp.asarray(False)
    u32, u64 = _rounding.unit_roundoff(np.float32), _rounding.unit_roundoff(np.float64)
    return sigma > math.sqrt(u32 * u64) * xp.abs(center)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class TaylorTest(Outcome):
    """The outcome of `jgc.taylor_test`: passed, failed or inconclusive.

    Arrays gain leading batch axes under `jax.vmap`. Per-rung arrays have one entry per
    ε of the ladder (largest first).

    Attributes:
      passed, failed: bool.
      eps: the ladder ε_k = ε₀·2^-k (the perturbation is θ + ε·h; h is relative to θ).
      remainder: R_k, signed.
      bound: the rounding bound of each R_k.
      resolved: |R_k| > 4 × bound (above rounding).
      rates: log₂(|R_k| / |R_{k+1}|) where both rungs are resolved, else NaN.
      second: D_k = R_k − 2^m R_{k+1} (k < K − 1) and `second_bound` its rounding bound.
      proven_wrong: per rung (k < K − 1), the remainder cannot be that of right terms.
      asymptotic: per rung, assumption A is consistent from that rung down.
      rate: the rate at the rungs that decided (NaN when none did).
      rel_error: the estimated relative error of the last term (⟨g, h⟩, or ⟨h, Hh⟩ for
        order 2) from the rung that decided (Richardson, λ = 2); `rel_error_bound` the
        largest the rungs allow there.
      rounding_eps: the ε below which rounding took over (NaN when every rung is resolved).
      noise: σ, the loss's measured rounding noise (absolute).
      loss: J(θ); directional: ⟨g, h⟩; curvature: ⟨h, Hh⟩ (order 2, else 0).
      gradient_failed: order 2: the gradient's own (first-order) remainder failed.
      structured: the loss's noise grows from the finest table (δ₁) to the ladder's scale:
        structure finer than the ladder, not rounding (no failure is then proven).
      tol: the relative error the "remainder at rounding" pass guarantees.
      order: 1 (gradient) or 2 (gradient and HVP); the expected rate is order + 1.
      num_evals: loss evaluations (rungs, J(θ), the two noise tables).
    """

    passed: Array
    failed: Array
    eps: Array
    remainder: Array
    bound: Array
    resolved: Array
    rates: Array
    second: Array
    second_bound: Array
    proven_wrong: Array
    asymptotic: Array
    rate: Array
    rel_error: Array
    rel_error_bound: Array
    rounding_eps: Array
    noise: Array
    loss: Array
    directional: Array
    curvature: Array
    gradient_failed: Array
    structured: Array
    tol: Array
    order: int = dataclasses.field(metadata=dict(static=True))
    num_evals: int = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    kind: ClassVar[str] = "taylor_test"

    @property
    def expected_rate(self) -> int:
        return self.order + 1


# ---------------------------------------------------------------- noise


def ecnoise(xp, values):
    """Noise std from 2·EC + 1 equally spaced values (Moré & Wild's ECnoise table).

    The k-th differences of a smooth function at a tiny spacing vanish, those of noise of
    std σ have variance σ²·(2k)!/(k!)²; each k = 3..6 gives an estimate, and the mean of
    the middle two is returned (robust to one order still seeing the smooth part)."""
    f = values
    ests = []
    for k in range(1, 7):
        f = f[1:] - f[:-1]
        if k >= 3:
            gamma = math.factorial(k) ** 2 / math.factorial(2 * k)
            ests.append(xp.sqrt(gamma * xp.mean(f * f)))
    ests = xp.sort(xp.stack(ests))
    return 0.5 * (ests[1] + ests[2])


# ---------------------------------------------------------------- the verdict


def _reverse_all(xp, ok):
    """out[k] = all(ok[k:]) (True past the end)."""
    return xp.flip(xp.cumprod(xp.flip(ok).astype(xp.int32)) > 0)


def _last_index(xp, mask):
    """The largest index where mask holds, −1 when none does."""
    idx = xp.arange(mask.shape[0])
    return xp.max(xp.where(mask, idx, -1))


def analyse(xp, J, Jc, eps, G, C, eG, eC, sigma, m: int, dtype, tol, structured=False, low=None, fine=None):
    """Remainders, rates and the verdict of order m from the loss values on the ladder.

    J: (K,) loss values at θ + ε_k h; Jc: J(θ); G, C: ⟨g, h⟩ and ⟨h, Hh⟩ with rounding
    bounds eG, eC; sigma: the loss's noise std. Returns a dict of the result's arrays.
    """
    u = _rounding.unit_roundoff(dtype)
    K = J.shape[0]
    lin = eps * G
    quad = 0.5 * eps**2 * C if m == 2 else xp.zeros_like(eps)
    R = (J - Jc) - lin - quad
    tau = (
        KAPPA * math.sqrt(2) * sigma
        + u * (xp.abs(J) + xp.abs(Jc))
        + eps * eG
        + (0.5 * eps**2 * eC if m == 2 else 0.0)
        + 2 * u * (xp.abs(J - Jc) + xp.abs(lin) + xp.abs(quad))
    )
    two = 2.0**m
    D = R[:-1] - two * R[1:]
    cj = math.sqrt(1 + two**2 + (two - 1) ** 2)  # J_k, J_{k+1}, J(θ) in D
    tau_D = (
        KAPPA * cj * sigma
        + u * (xp.abs(J[:-1]) + two * xp.abs(J[1:]) + (two - 1) * xp.abs(Jc))
        + (eps[:-1] * eG if m == 2 else 0.0)
        + 2 * u * (xp.abs(R[:-1]) + two * xp.abs(R[1:]) + xp.abs(lin[:-1]))
    )
    finite = xp.isfinite(R)
    resolved = finite & (xp.abs(R) > RES * tau)

    # assumption A along the ladder, where the noise lets it be seen: D falls neither slower than
    # 2^-(m+½) per halving nor, where it is resolved, faster than 2^-(m+3) (a D crossing zero)
    slow, fast = GATE / two, FAST / two
    too_slow = (xp.abs(D[1:]) - tau_D[1:]) > slow * (xp.abs(D[:-1]) + tau_D[:-1])  # (K − 2,)
    d_resolved = xp.abs(D[:-1]) > RES * tau_D[:-1]
    too_fast = d_resolved & ((xp.abs(D[1:]) + tau_D[1:]) < fast * (xp.abs(D[:-1]) - tau_D[:-1]))
    violated = too_slow | too_fast | ~xp.isfinite(D[1:]) | ~xp.isfinite(D[:-1])
    violated = xp.concatenate([violated, xp.zeros((1,), bool)])  # (K − 1,): nothing to check past the last D
    asymptotic = _reverse_all(xp, ~violated)

    # right terms: R_k = λ·D_k with λ in the band; proven wrong when no λ in the band fits
    lam = (LAMBDA[0] / M, LAMBDA[1] * M)
    Rk, tR = R[:-1], tau[:-1]
    f1 = xp.abs(Rk - lam[0] * D) - tR - lam[0] * tau_D
    f2 = xp.abs(Rk - lam[1] * D) - tR - lam[1] * tau_D
    same_side = xp.sign(Rk - lam[0] * D) == xp.sign(Rk - lam[1] * D)
    outside = (f1 > 0) & (f2 > 0) & same_side
    proven_wrong = resolved[:-1] & xp.isfinite(D) & asymptotic & outside
    # the noise must be rounding: not growing with the spacing (structure finer than the ladder),
    # and not beyond PLAUSIBLE roundings of the loss's values (a loss varying at scales no table
    # resolves looks like noise, and may have any slope)
    u_eff = xp.where(low, _rounding.unit_roundoff(np.float32), u) if low is not None else u
    magnitude = xp.maximum(xp.abs(Jc), xp.max(xp.where(xp.isfinite(J), xp.abs(J), 0.0)))
    rounding_like = ~structured & (sigma <= PLAUSIBLE * u_eff * magnitude)
    proven_wrong = proven_wrong & rounding_like
    # the error of the last term each rung allows, a·ε^m ∈ R − λD ± noise: two rungs must agree on it
    lo = (xp.minimum(Rk - lam[0] * D, Rk - lam[1] * D) - tR - lam[1] * tau_D) / eps[:-1] ** m
    hi = (xp.maximum(Rk - lam[0] * D, Rk - lam[1] * D) + tR + lam[1] * tau_D) / eps[:-1] ** m
    # the finest table measures the last term at its own scale δ₁: where it agrees with the analytic
    # term and not with what the ladder says, the loss has structure between the scales (no failure)
    if fine is not None:
        f_err, f_bound = fine
        contradicts = (f_err + f_bound < lo) | (f_err - f_bound > hi)
        proven_wrong = proven_wrong & ~((xp.abs(f_err) <= f_bound) & contradicts)
    agree = (lo[:-1] <= hi[1:]) & (lo[1:] <= hi[:-1])
    # a failure: two consecutive rungs, with A seen (two D ratios) below the first
    seen = xp.arange(K - 2) <= K - 4
    failed = xp.any(proven_wrong[:-1] & proven_wrong[1:] & agree & seen)

    # rates and their rounding intervals
    both = resolved[:-1] & resolved[1:]
    a, b = xp.abs(R[:-1]), xp.abs(R[1:])
    safe = lambda x: xp.where(both, x, 1.0)  # noqa: E731
    rates = xp.where(both, xp.log2(safe(a) / safe(b)), xp.nan)
    rate_lo = xp.where(both, xp.log2(safe(a - tau[:-1]) / safe(b + tau[1:])), -xp.inf)
    triple = both[:-1] & both[1:]  # rungs k, k+1, k+2 resolved
    last = _last_index(xp, triple)
    lk = xp.maximum(last, 0)
    p_half = m + 0.5
    rate_ok = (rate_lo[lk] >= p_half) & (rate_lo[lk + 1] >= p_half) & asymptotic[lk]
    passed_rate = (last >= 0) & rate_ok

    # the error of the last term the rungs allow (under A), relative to the term
    err_hi = (xp.maximum(xp.abs(Rk - LAMBDA[0] * D), xp.abs(Rk - LAMBDA[1] * D)) + tR + LAMBDA[1] * tau_D) / eps[:-1] ** m
    err_est = (Rk - 2 * D) / eps[:-1] ** m
    term = G if m == 1 else 0.5 * C
    numeric = term + err_est
    denom = xp.abs(term) + xp.abs(numeric)
    rel_est = xp.where(denom > 0, xp.abs(err_est) / xp.where(denom > 0, denom, 1), 0.0)
    rel_hi = xp.where(denom > 0, err_hi / xp.where(denom > 0, denom, 1), xp.where(err_hi > 0, xp.inf, 0.0))
    usable = asymptotic & xp.isfinite(rel_hi) & finite[:-1] & finite[1:]
    best_bound = xp.min(xp.where(usable, rel_hi, xp.inf))
    within = best_bound <= tol

    nonfinite = ~xp.isfinite(Jc) | ~xp.isfinite(G) | (~xp.isfinite(C) if m == 2 else False)
    failed = failed | nonfinite
    passed = (passed_rate | (last < 0)) & within & ~failed

    # the rung that decided: the last proven-wrong one, the pass triple, else the last resolved
    last_wrong = _last_index(xp, proven_wrong)
    last_res = _last_index(xp, resolved[:-1])
    at = xp.where(failed & (last_wrong >= 0), last_wrong, xp.where(passed_rate, lk + 1, xp.maximum(last_res, 0)))
    rate = xp.where(
        passed_rate, xp.minimum(rates[lk], rates[lk + 1]), xp.where(last_wrong >= 0, rates[xp.maximum(last_wrong, 0)], xp.nan)
    )
    rate = xp.where(xp.isnan(rate) & (last_res >= 0), rates[xp.maximum(xp.minimum(last_res, K - 2), 0)], rate)
    rel_error = xp.where((last_res >= 0) | (last_wrong >= 0), rel_est[at], xp.nan)
    rel_bound = best_bound
    last_resolved = _last_index(xp, resolved)
    rounding_eps = xp.where(last_resolved < K - 1, eps[xp.minimum(last_resolved + 1, K - 1)], xp.nan)
    return dict(
        passed=passed,
        failed=failed,
        remainder=R,
        bound=tau,
        resolved=resolved,
        rates=rates,
        second=D,
        second_bound=tau_D,
        proven_wrong=proven_wrong,
        asymptotic=asymptotic,
        rate=rate,
        rel_error=rel_error,
        rel_error_bound=rel_bound,
        rounding_eps=rounding_eps,
    )


# ---------------------------------------------------------------- the check


def _direction(lay: _tree.Layout, key, params) -> jax.Array:
    """Random signs per leaf, scaled by the leaf's rms (by the overall rms for a zero leaf, 1 if all are zero)."""
    theta = _tree.ravel(lay, params)
    total = jnp.sqrt(jnp.mean(jnp.square(theta)))
    parts = []
    for k, (o, s) in enumerate(zip(lay.offsets, lay.sizes, strict=True)):
        leaf = theta[o : o + s]
        rms = jnp.sqrt(jnp.mean(jnp.square(leaf)))
        scale = jnp.where(rms > 0, rms, jnp.where(total > 0, total, 1.0))
        parts.append(_signs.signs(key, (s,), theta.dtype, salt=k) * scale)
    return jnp.concatenate(parts)


def _flat_like(lay, tree, name, like):
    _validate.like_params(lay, tree, name, like=like)
    return _tree.ravel(lay, tree)


def _fine(xp, first, Jc, d, G, C, eG, eC, sigma, m: int):
    """The last term's error at the finest table's scale d: (estimate, bound).

    first: J(θ) then J(θ + t·d·h) for t = −4..−1, 1..4. m = 1: the central difference
    (J(d) − J(−d))/2d against ⟨g, h⟩; m = 2: the second difference against ⟨h, Hh⟩, as the
    error of the ε^m coefficient (a for m = 1, ½ΔC for m = 2). The bound is κ·σ times the
    stencil's noise gain, plus twice the Richardson estimate from the step 2d.
    """
    v = {t: first[1 + EC + t - 1] if t > 0 else first[1 + EC + t] for t in (-2, -1, 1, 2)}
    if m == 1:
        s1 = (v[1] - v[-1]) / (2 * d)
        s2 = (v[2] - v[-2]) / (4 * d)
        err, gain, term_bound = s1 - G, math.sqrt(0.5) / d, eG
        trunc = xp.abs(s2 - s1) / 3
    else:
        s1 = (v[1] - 2 * Jc + v[-1]) / d**2
        s2 = (v[2] - 2 * Jc + v[-2]) / (4 * d**2)
        err, gain, term_bound = 0.5 * (s1 - C), 0.5 * math.sqrt(6) / d**2, 0.5 * eC
        trunc = 0.5 * xp.abs(s2 - s1) / 3
    bound = KAPPA * sigma * gain + 2 * trunc + term_bound
    return err, bound


def _evaluate(loss_fn, lay, params, args, points, chunk_size):
    def one(theta):
        out = _validate.trace("loss_fn", loss_fn, _tree.unravel(lay, theta, params), *args)
        return jnp.real(out)

    if chunk_size is None or chunk_size >= points.shape[0]:
        return jax.vmap(one)(points)
    return jax.lax.map(one, points, batch_size=chunk_size)


def _measure(loss_fn, grad_fn, hvp_fn, params, args, key, direction, candidates, num_rungs, chunk_size, lay):
    """Everything that evaluates the user's functions, in one program: the loss on every point (one
    vmap), ⟨g, h⟩ and ⟨h, Hh⟩ with their rounding bounds, and the candidate ladders."""
    theta = _tree.ravel(lay, params)
    dtype = theta.dtype
    h = _direction(lay, key, params) if direction is None else _flat_like(lay, direction, "direction", "params")
    h = h.astype(dtype)
    g = grad_fn(params, *args) if grad_fn is not None else jax.grad(loss_fn, allow_int=True)(params, *args)
    g = _flat_like(lay, g, "grad_fn", "params").astype(dtype)
    G, eG = _rounding.dot(g, h)
    if hvp_fn is not None:
        Hh = hvp_fn(params, _tree.unravel(lay, h, params), *args)
        Hh = _flat_like(lay, Hh, "hvp_fn", "params").astype(dtype)
        C, eC = _rounding.dot(h, Hh)
    else:
        C, eC = jnp.zeros((), dtype), jnp.zeros((), dtype)
    # The ladders ε_k = ε₀·2^-k with their two noise tables (δ = the smallest rung / 8, at θ and at
    # the top rung), and a fine table at θ (δ₁: many float32 ulps, tiny for the smooth part).
    t = jnp.asarray(np.concatenate([np.arange(-EC, 0), np.arange(1, EC + 1)]), dtype)
    ladders = jnp.stack([jnp.exp2(jnp.asarray(c, dtype) - jnp.arange(num_rungs, dtype=dtype)) for c in candidates])
    steps = [jnp.zeros((1,), dtype), t * DELTA1[jnp.dtype(dtype).name]]
    for eps in ladders:
        delta = eps[-1] / 8
        steps += [eps, t * delta, eps[0] + t * delta]
    values = _evaluate(loss_fn, lay, params, args, theta[None, :] + jnp.concatenate(steps)[:, None] * h[None, :], chunk_size)
    return dict(values=values, G=G, C=C, eG=eG, eC=eC, ladders=ladders)


def _decide(xp, meas, m: int, num_rungs: int, tol, theta_dtype) -> TaylorTest:
    """The verdict from the measured values (NumPy on the host, jax.numpy under a trace).

    Rounding noise does not depend on the spacing; a noise that grows from the fine table to the
    ladder's scale is structure finer than the ladder (`structured`). With two candidate ladders
    (float64 parameters, no eps0), the float32 one is used when the fine table says the loss
    rounds like float32 (it computes in float32 inside)."""
    values, ladders = meas["values"], meas["ladders"]
    G, C, eG, eC = meas["G"], meas["C"], meas["eG"], meas["eC"]
    name = jnp.dtype(theta_dtype).name
    jdtype = values.dtype
    Jc, first = values[0], values[: 1 + 2 * EC]
    sigma1 = ecnoise(xp, xp.concatenate([first[1 : 1 + EC], first[:1], first[1 + EC :]]))
    low = lower_precision(xp, theta_dtype, sigma1, Jc)
    per = num_rungs + 4 * EC
    blocks = [values[1 + 2 * EC + i * per : 1 + 2 * EC + (i + 1) * per] for i in range(ladders.shape[0])]
    block = xp.where(low, blocks[1], blocks[0]) if len(blocks) == 2 else blocks[0]
    eps = xp.where(low, ladders[1], ladders[0]) if len(blocks) == 2 else ladders[0]
    delta = eps[-1] / 8
    J, e2, e3 = block[:num_rungs], block[num_rungs : num_rungs + 2 * EC], block[num_rungs + 2 * EC :]
    sigma_l = ecnoise(xp, xp.concatenate([e2[:EC], Jc[None], e2[EC:]]))
    sigma_top = ecnoise(xp, xp.concatenate([e3[:EC], J[:1], e3[EC:]]))
    sigma = xp.maximum(xp.maximum(sigma1, sigma_l), sigma_top)
    structured = sigma_l > STRUCTURE * (sigma1 + _rounding.unit_roundoff(jdtype) * xp.abs(Jc))
    # the table at θ continues the ladder: its points 4δ, 2δ, δ are the rungs ε_K, ε_K+1, ε_K+2, so
    # assumption A is seen below the smallest rung too (where a loss with structure between the
    # table's and the ladder's scales shows it)
    J = xp.concatenate([J, e2[EC + 3 : EC + 4], e2[EC + 1 : EC + 2], e2[EC : EC + 1]])
    eps = xp.concatenate([eps, 4 * delta[None], 2 * delta[None], delta[None]]).astype(jdtype)
    tol = xp.asarray(tol, jdtype)
    G, C = G.astype(jdtype), C.astype(jdtype)
    fine = _fine(xp, first, Jc, DELTA1[name], G, C, eG, eC, sigma1, m)
    out = analyse(xp, J, Jc, eps, G, C, eG, eC, sigma, m, jdtype, tol, structured, low, fine)
    grad_failed = xp.asarray(False)
    if m == 2:
        fine1 = _fine(xp, first, Jc, DELTA1[name], G, C, eG, eC, sigma1, 1)
        grad_failed = analyse(xp, J, Jc, eps, G, C, eG, eC, sigma, 1, jdtype, tol, structured, low, fine1)["failed"]
        out["failed"] = out["failed"] | grad_failed
        out["passed"] = out["passed"] & ~grad_failed
    return TaylorTest(
        eps=eps,
        noise=sigma,
        loss=Jc,
        directional=G,
        curvature=C,
        gradient_failed=grad_failed,
        structured=structured,
        tol=tol,
        order=m,
        num_evals=int(values.shape[0]),
        dtype=jnp.dtype(jdtype).name,
        **out,
    )


def taylor_test(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    params: PyTree,
    *args,
    key: jax.Array | None = None,
    hvp_fn: Callable[..., PyTree] | None = None,
    direction: PyTree | None = None,
    eps0: float | None = None,
    num_rungs: int = 8,
    tol: float | None = None,
    chunk_size: int | None = None,
) -> TaylorTest:
    """The Taylor remainder test of a gradient (rate 2) or, with `hvp_fn`, of an HVP (rate 3).

    Along one direction h (random, each leaf scaled by its rms, so ε is a relative
    perturbation), the remainders |J(θ + εh) − J(θ) − ε⟨g, h⟩| (minus ½ε²⟨h, Hh⟩ with
    `hvp_fn`) are evaluated at ε = ε₀, ε₀/2, …, all in one `vmap`, with the loss's
    rounding noise measured alongside; the verdict reads the rates, rung by rung, through
    what the rungs can prove (`jgc/_taylor.py`, docs/rules.md): 2 (3) for right terms,
    1 (2) for a wrong last term. The number of loss evaluations does not depend on the
    number of parameters: `num_rungs` + 25 (33 by default), twice the ladder for float64
    parameters without `eps0` (57: a float32 ladder alongside, used when the loss rounds
    like float32 inside). Pure: works under `jax.jit` and `jax.vmap`.

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`.
      grad_fn: `grad_fn(params, *args) -> pytree like params`; None: `jax.grad(loss_fn)`.
      params: the point (a pytree; floating-point leaves are perturbed, the rest passed as is).
      *args: passed unchanged to `loss_fn`, `grad_fn` and `hvp_fn`.
      key: PRNG key for the direction (not needed with `direction`).
      hvp_fn: `hvp_fn(params, v, *args) -> pytree like params` (H·v); the test is then
        of second order.
      direction: h itself, a pytree like params (then ε is in its units).
      eps0: the top rung; None: 2^-10 (float64) or 2^-3 (float32) for a gradient, 2^-6 or
        2^-1 with an HVP. Rounded down to a power of two (so every ε·h is exact).
      num_rungs: rungs of the ladder (3 to 16).
      tol: relative error of the last term guaranteed by a pass when fewer than three
        rungs lie above rounding; None: 1e-3 (float64), 1e-2 (float32).
      chunk_size: evaluate the rungs in chunks of this many (`lax.map`) instead of one vmap.

    Returns:
      A `jgc.TaylorTest`.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> loss = lambda w: jnp.sum(jnp.sin(w) ** 2)
      >>> w = jnp.linspace(0.5, 1.5, 5)
      >>> bool(jgc.taylor_test(loss, lambda w: jnp.sin(2 * w), w, key=jax.random.key(0)).passed)
      True
      >>> bool(jgc.taylor_test(loss, lambda w: jnp.sin(w), w, key=jax.random.key(0)).failed)
      True
    """
    _validate.callable_("loss_fn", loss_fn)
    _validate.callable_("grad_fn", grad_fn, allow_none=True)
    _validate.callable_("hvp_fn", hvp_fn, allow_none=True)
    if direction is None:
        _validate.key(key)
    _validate.count("num_rungs", num_rungs)
    if not 3 <= num_rungs <= 16:
        raise ValueError(f"num_rungs must be between 3 and 16; received {num_rungs}.")
    _validate.positive("eps0", eps0)
    _validate.positive("tol", tol)
    _validate.count("chunk_size", chunk_size, allow_none=True)
    if isinstance(eps0, Tracer):
        raise TypeError("eps0 must be a Python float (it sets the ladder's static powers of two); received a traced value.")
    lay = _tree.layout(params, name="params")
    out = jax.eval_shape(lambda p: _validate.trace("loss_fn", loss_fn, p, *args), params)
    _validate.scalar_output(out)
    name = jnp.dtype(lay.low_dtype).name
    m = 1 if hvp_fn is None else 2
    log_eps0 = None if eps0 is None else math.floor(math.log2(float(eps0)))
    tol_value = _TOL[name] if tol is None else tol
    if key is None:
        key = jax.random.key(0)  # unused: the direction is given
    if log_eps0 is not None:
        candidates = (log_eps0,)
    elif name == "float64":
        candidates = (_EPS0[("float64", m)], _EPS0[("float32", m)])
    else:
        candidates = (_EPS0[(name, m)],)
    theta_dtype = lay.dtype
    dynamic, static = _jit.partition((params, args))
    fns = tuple(None if f is None else _jit.Ref(f) for f in (loss_fn, grad_fn, hvp_fn))
    measure = _Measure(fns, static, candidates, num_rungs, chunk_size, lay)
    if _jit.is_traced((dynamic, key, direction, tol_value)):  # one jit, so that a vmap over the test compiles once
        traced = _Traced(measure, m, num_rungs, theta_dtype)
        return _jit.program(("taylor_test", "traced", traced), traced)(dynamic, key, direction, tol_value)
    # the user's functions in one compiled program, cached on them: a second call compiles nothing
    meas = jax.tree_util.tree_map(np.asarray, _jit.program(("taylor_test", measure), measure)(dynamic, key, direction))
    with np.errstate(all="ignore"):  # the verdict's 0/0 and inf are handled where they arise
        return _decide(np, meas, m, num_rungs, tol_value, theta_dtype)


@dataclasses.dataclass(frozen=True)
class _Measure:
    """`_measure` as a cacheable program: the user's functions as `_jit.Ref`s, the static configuration."""

    fns: tuple  # Refs of loss_fn, grad_fn, hvp_fn (None where not given)
    static: tuple  # the non-array leaves of (params, args), from `_jit.partition`
    candidates: tuple
    num_rungs: int
    chunk_size: int | None
    lay: _tree.Layout

    def __call__(self, dynamic, key, direction):
        params, args = _jit.combine(dynamic, self.static)
        loss_fn, grad_fn, hvp_fn = [None if f is None else f() for f in self.fns]
        return _measure(
            loss_fn, grad_fn, hvp_fn, params, args, key, direction, self.candidates, self.num_rungs, self.chunk_size, self.lay
        )


@dataclasses.dataclass(frozen=True)
class _Traced:
    """The measurement and the verdict in one program, for a call under the caller's trace."""

    measure: _Measure
    m: int
    num_rungs: int
    theta_dtype: object

    def __call__(self, dynamic, key, direction, tol):
        return _decide(jnp, self.measure(dynamic, key, direction), self.m, self.num_rungs, tol, self.theta_dtype)
