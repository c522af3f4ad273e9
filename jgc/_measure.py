"""Calibrate, then measure: two pure steps of the pipeline, each returning a pytree.

**calibrate** turns the values of the *noise probe* into a frozen `Calibration`: J(θ), the
loss's rounding level ε_J (an estimate built to bound, `jgc/_noise.py`), the precision the
loss really computes in, the step eps and the tolerance, and whether the loss is
deterministic (the first chunk is evaluated twice by the same program). The noise probe
runs in the same engine call as the first measurement where the offsets allow.

**measure** takes the engine, a calibration and probes (with their steps) and returns
`Measured`:

1. the stencil at step h for every probe (stage 1), and each derivative's rounding bound;
2. the stencil at 2h only for the probes whose discrepancy with the analytic value exceeds
   that rounding bound — where a truncation estimate or a kink can change the verdict
   (stage 2); elsewhere the numbers already agree within rounding;
3. per probe: the numeric and analytic values, the bound b on the numeric value's error,
   kinks, and whether the bound is known.

On the host stage 2 takes exactly the probes that need it; under a trace it takes the
`top_k` most discrepant (a static number), and any other that needed it is marked
unknown (the verdict then cannot call its leaf resolved). Nothing can be re-measured under
a trace. A probe whose one-sided derivatives disagree with no valid subgradient between
them (`rough`: the stencil may straddle kinks, or several kinks at θ at once have
subgradients beyond the one-sided derivatives) is unknown (on the host the resolution pass
re-measures it at other steps, `jgc/_resolve.py`; still rough there, it stays unknown).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from . import _noise, _probes, _stencils
from ._engine import Engine
from ._problem import Problem
from ._typing import Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Calibration:
    """What the noise probe says about the loss at θ (frozen; per output for vector functions).

    Attributes:
      center: J(θ).
      level: ε_J, the rounding noise (std) of the loss values, absolute.
      rel_level: ε_J relative to max(1, |J(θ)|).
      eps: the base step.
      tol: the relative error a pass guarantees, and the bar a proven error must clear to fail.
      precision: code of the precision the loss rounds like (`_stencils.PRECISIONS`).
      spread: the largest difference between two evaluations of the same points by the same
        program (0 for a deterministic loss on CPU).
      deterministic: spread within what one program may differ by (nothing on CPU), and the loss
        traces to the same program twice (no random numbers drawn when it is traced).
      same_trace: the loss traced twice gave the same program.
    """

    center: Array
    level: Array
    rel_level: Array
    eps: Array
    tol: Array
    precision: Array
    spread: Array
    deterministic: Array
    same_trace: Array


@dataclasses.dataclass(frozen=True)
class NoiseProbe:
    """The noise probe's layout: q coordinates × (near, wide) spacings × the EC bases, then J(θ)."""

    probes: _probes.Probes
    offsets: np.ndarray
    coords: int
    per: int  # probes per (coordinate, spacing)
    t: np.ndarray


def precision_of(problem: Problem, engine: Engine) -> str:
    """The least precise float dtype the loss computes in: θ's, or lower when its jaxpr says so."""
    low = problem.lay.low_dtype.name
    inside = engine.facts.lowest
    if inside is not None and _stencils.unit(inside) > _stencils.unit(low):
        return inside
    return low


def noise_probe(problem: Problem, engine: Engine, analytic=None, eps=None) -> NoiseProbe:
    """J(θ) and the noise tables: along the two coordinates where |A_j|·max(1, |θ_j|) is largest
    (the gradient says the loss moves there; without an analytic vector, the middle of the
    second largest leaf), the middle of the largest leaf, and the largest |θ_j|; at spacing δ
    and the wide spacing (`_noise.wide_step`), t·δ for t = ±1..±4."""
    p, xp = problem, problem.xp
    m = p.stencil.evals_per_probe
    bases, offsets, t = _noise.ec_layout(m)
    coords = _noise_coordinates(problem, analytic)
    # the nominal step of the loss's precision (not a step the user chose: rounding noise does not
    # depend on it, and a wide table would read the loss's curvature as noise)
    delta = _noise.ec_step(_stencils.unit(p.lay.low_dtype), _stencils.nominal_eps(precision_of(problem, engine), p.method))
    spacing = np.concatenate([delta * bases, _noise.wide_step(delta, t) * bases])
    starts = xp.repeat(xp.stack(coords), len(spacing))
    scale = xp.maximum(1, xp.abs(p.theta_x[starts]).astype(p.dtype))
    base = xp.tile(xp.asarray(spacing, p.dtype), len(coords)) / scale
    starts = xp.concatenate([starts, xp.zeros(1, starts.dtype)])
    base = xp.concatenate([base, xp.zeros(1, p.dtype)])
    if engine.kind == _probes.COORDS:
        probes = _probes.Probes(starts, base)
    else:
        ones = xp.ones(starts.shape, np.int32)
        probes = _probes.Probes(starts, base, ones, xp.zeros(starts.shape, np.int32), _probes.BLOCKS)
    return NoiseProbe(probes, offsets, len(coords), len(bases), t)


def _noise_coordinates(problem: Problem, analytic):
    p, xp = problem, problem.xp
    lay = p.lay
    order = np.argsort([-s for s in lay.sizes], kind="stable")
    picks = [xp.asarray(lay.offsets[order[0]] + lay.sizes[order[0]] // 2, np.int32)]
    picks.append(xp.argmax(xp.abs(p.theta_x)).astype(np.int32))
    if analytic is not None and xp.ndim(analytic) == 1 and analytic.shape[0] == lay.n:
        weight = xp.abs(xp.asarray(analytic, p.dtype)) * xp.maximum(1, xp.abs(p.theta_x))
        weight = xp.where(xp.isfinite(weight), weight, 0)
        if lay.n > 1:
            top = xp.argsort(-weight)[:2] if xp is np else jax.lax.top_k(weight, 2)[1]
            picks += [top[0].astype(np.int32), top[1].astype(np.int32)]
        else:
            picks += [picks[-1], picks[-1]]
    else:
        second = order[1] if len(order) > 1 else order[0]
        picks += [xp.asarray(lay.offsets[second] + lay.sizes[second] // 2, np.int32), picks[0]]
    return picks


def calibrate(problem: Problem, engine: Engine, noise: NoiseProbe, values, spread, eps=None, tol=None, recheck=False, scale=None):
    """The `Calibration` from the noise probe's values (rows of `noise.probes`, J(θ) last).

    `eps`, `tol`: the user's, or None for the defaults of the loss's real precision (measured
    here). `recheck`: unresolved leaves of this check can be re-measured in float64 (a float32
    check on the host), so the default tolerance is what that resolves. `scale`: the largest
    change of J that rounding one intermediate makes (`_jaxpr.term_scale`); the level is at
    least its standard deviation (uniform rounding: scale/√3), so a term whose rounding the
    noise tables do not see (a saturated sigmoid's 1 − q) still counts.
    """
    p, xp = problem, problem.xp
    center = values[-1, 0]
    q, per, t = noise.coords, noise.per, noise.t
    pairs = []
    for i in range(q):
        near = values[(2 * i) * per : (2 * i + 1) * per]
        wide = values[(2 * i + 1) * per : (2 * i + 2) * per]
        pairs.append((_noise.level(xp, near, t, center), _noise.level(xp, wide, t, center)))
    inside = precision_of(problem, engine)
    wide = engine.facts.smooth or engine.facts.callback or inside != p.lay.low_dtype.name
    level = _noise.combine_levels(xp, pairs, wide)
    floor = 0.5 * _stencils.unit(p.lay.low_dtype) * xp.abs(xp.real(center))  # the last rounding of J alone
    level = xp.maximum(level, floor)  # ε_J ([out])
    if scale is not None:
        level = xp.maximum(level, xp.asarray(scale, level.dtype) / np.sqrt(3.0))
    magnitude = xp.abs(xp.real(center))
    if xp.ndim(level):  # a vector function: the probed coordinates may not reach every output, so
        # each output gets at least the relative level seen anywhere, at its own (or the typical) size
        magnitude = xp.maximum(magnitude, xp.sqrt(xp.mean(magnitude * magnitude)))
    # relative to max(1, |J(θ)|), as steps are to max(1, |θ_j|): a loss that is ~0 by cancellation
    # of terms of order 1 keeps their rounding level (its step need not grow); at most 1e-3
    scale = xp.maximum(xp.maximum(magnitude, 1.0), 1e3 * xp.max(level))
    rel = level / xp.where(scale > 0, scale, 1)  # 0 when J is exactly 0 and noiseless
    rel_level = xp.max(rel) if xp.ndim(rel) else rel
    level = xp.maximum(level, rel_level * magnitude) if xp.ndim(level) else level
    precision = _stencils.precision(p.lay.low_dtype.name, inside, rel_level, xp, callback=engine.facts.callback)
    d_eps, d_tol = _stencils.defaults(precision, p.method, rel_level, xp, recheck=recheck)
    limit = _noise.spread_limit(xp, values)
    return Calibration(
        center=center,
        level=level,
        rel_level=rel_level,
        eps=xp.asarray(d_eps if eps is None else eps, p.dtype),
        tol=xp.asarray(d_tol if tol is None else tol, p.dtype),
        precision=xp.asarray(precision, np.int32),
        spread=xp.asarray(spread, xp.real(center).dtype),
        deterministic=xp.asarray(spread <= limit) & engine.same_trace,
        same_trace=xp.asarray(engine.same_trace),
    )


# ---------------------------------------------------------------- measure


@dataclasses.dataclass(frozen=True)
class Measured:
    """Per probe (leading axis), vector-valued functions add a trailing output axis."""

    numeric: Array
    analytic: Array
    bound: Array  # what the finite difference alone may be off by
    kink: Array  # a kink, with the analytic value a valid subgradient
    known: Array  # False: the bound is not known (needed a truncation estimate it did not get, or rough)
    step: Array  # h per probe
    doubled: Array  # stage 2 (step 2h) ran for this probe
    truncation: Array  # the Richardson truncation estimate where stage 2 ran, else 0
    rough: Array  # the one-sided derivatives disagree and A is not between them (may straddle kinks)

    def take(self, rows) -> Measured:
        return Measured(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def astype(self, like: Measured) -> Measured:
        """Host arrays with the dtypes of `like`'s."""
        return Measured(
            *(np.asarray(getattr(self, f.name)).astype(np.asarray(getattr(like, f.name)).dtype) for f in dataclasses.fields(self))
        )


def evaluate(engine: Engine, cal: Calibration, probes: _probes.Probes, doubled: bool = False, repeat=None):
    """(D, values, h, proj, spread, evals) at step h (or 2h) for every probe."""
    p = engine.problem
    st = p.stencil
    offsets = np.asarray(st.doubled if doubled else st.offsets)
    values, h, proj, spread, evals = engine.run(probes, offsets, repeat)
    D = _noise.derivative(p.xp, st, values, cal.center, h, 2.0 if doubled else 1.0)
    return D, values, h, proj, spread, evals


def rounding_bound(engine: Engine, cal: Calibration, D, h):
    return _noise.rounding(engine.problem.xp, engine.problem.stencil, cal.level, cal.rel_level, D, h)


def measure(
    engine: Engine,
    cal: Calibration,
    probes: _probes.Probes,
    analytic=None,
    top_k: int | None = None,
    force: bool = False,
    stage1=None,
    doubled: bool = True,
):
    """Stage 1 for all probes, stage 2 where it can change a verdict (see the module docstring).

    `analytic` (P[, out]): the analytic values; None takes the projections ⟨project, d⟩.
    `stage1`: (values, h, proj) already evaluated at step h. `doubled=False`: stage 1 only.
    `force`: stage 2 for every probe. Returns (Measured, loss evaluations it took).
    """
    p = engine.problem
    xp, st = p.xp, p.stencil
    evals = 0
    if stage1 is None:
        D, v1, h, proj, _, evals = evaluate(engine, cal, probes)
    else:
        v1, h, proj = stage1
        D = _noise.derivative(xp, st, v1, cal.center, h)
    A = xp.asarray(proj if analytic is None else analytic, D.dtype)
    r = rounding_bound(engine, cal, D, h)
    diff = xp.abs(D - A)
    finite = xp.isfinite(D) & xp.isfinite(A)
    suspicious = ((diff > r) | force) & finite & doubled
    per_probe = suspicious if D.ndim == 1 else xp.any(suspicious, axis=tuple(range(1, D.ndim)))
    P = D.shape[0]
    if p.traced:
        k = P if top_k is None else min(P, top_k)
        ratio = diff / xp.where(r > 0, r, 1)
        score = xp.where(per_probe, xp.max(ratio, axis=tuple(range(1, D.ndim))) if D.ndim > 1 else ratio, -1.0)
        _, rows = jax.lax.top_k(score, k)
        valid = per_probe[rows]
    else:
        rows = np.flatnonzero(per_probe)
        valid = np.ones(rows.shape, bool)
    bound: Array = r
    kink: Array = xp.zeros(D.shape, bool)
    rough: Array = xp.zeros(D.shape, bool)
    measured: Array = xp.zeros(P, bool)
    trunc: Array = xp.zeros(D.shape, D.dtype)
    if rows.shape[0]:
        sub = probes.take(rows)
        if p.traced:  # rows beyond the real need: null probes, results ignored
            sub = dataclasses.replace(sub, base=xp.where(valid, sub.base, 0))
        D2, v2, _, _, _, e2 = evaluate(engine, cal, sub, doubled=True)
        evals = evals + (st.evals_per_probe * xp.sum(valid.astype(np.int32)) if p.traced else e2)
        t = _noise.truncation(xp, st, D[rows], D2)
        b2 = r[rows] + 2 * t
        if st.one_sided:
            scale = xp.sqrt(xp.mean(xp.where(finite, D * D, 0)))
            k2, rough2, b2 = _noise.kinks(
                xp,
                st,
                v1[rows],
                v2,
                cal.center,
                h[rows],
                A[rows],
                D[rows],
                b2,
                cal.level,
                cal.tol,
                scale,
                engine.facts.smooth,
                # a kink at θ proves A wrong only along one coordinate: a direction through several
                # kinks at once has subgradients beyond its one-sided derivatives (a sum of hulls)
                t if engine.kind == _probes.COORDS else None,
            )
        else:
            k2 = rough2 = xp.zeros(b2.shape, bool)
        vcol = valid.reshape(valid.shape + (1,) * (D.ndim - 1))
        if p.traced:
            bound = bound.at[rows].set(xp.where(vcol, b2, bound[rows]))
            kink = kink.at[rows].set(vcol & k2)
            rough = rough.at[rows].set(vcol & rough2)
            measured = measured.at[rows].set(valid)
            trunc = trunc.at[rows].set(xp.where(vcol, t, 0))
        else:
            bound, kink, rough, measured, trunc = bound.copy(), kink.copy(), rough.copy(), measured.copy(), trunc.copy()
            bound[rows], kink[rows], rough[rows], measured[rows], trunc[rows] = b2, k2, rough2, True, t
    mcol = measured.reshape(measured.shape + (1,) * (D.ndim - 1))
    known = ~suspicious | mcol
    # a rough entry proves nothing at this step (the stencil may straddle kinks, or several kinks at
    # θ at once have subgradients beyond the one-sided derivatives); a re-measurement at another
    # step decides (on concrete inputs), else it stays unknown
    known = known & ~rough
    return Measured(D, A, bound, kink, known, h, measured, trunc, rough), evals
