"""What every check does with its probes: measure each directional derivative and how wrong it may be.

A `Session` holds one chunk program for the check's function and, from one call of it,
J(θ) and the loss's rounding level (the noise probe of `jgc/_noise.py`), hence the
default step and tolerance. `Session.measure(probes, analytic)` then

1. evaluates the stencil at step h for every probe (stage 1) and bounds each derivative's
   rounding error;
2. evaluates the stencil at 2h only for the probes whose discrepancy with the analytic
   value exceeds that rounding bound — where a truncation estimate or a kink can change the
   verdict (stage 2); elsewhere the numbers already agree within rounding;
3. returns `Measured`: per probe the numeric and analytic values, the bound b on the
   numeric value's error, kinks, and whether the bound is known.

On the host stage 2 takes exactly the probes that need it; under a trace it takes the
`top_k` most discrepant (a static number), and any other that needed it is marked
unknown (the verdict then cannot call its leaf resolved).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import _engine, _noise, _probes, _stencils
from ._problem import Problem


@dataclasses.dataclass
class Measured:
    """Per probe (leading axis), vector-valued functions add a trailing output axis."""

    numeric: object
    analytic: object
    bound: object  # what the finite difference alone may be off by
    kink: object  # a kink, with the analytic value a valid subgradient
    known: object  # False: needed a truncation estimate it did not get (traced, beyond top_k)
    step: object  # h per probe
    doubled: object  # stage 2 (step 2h) ran for this probe
    truncation: object  # the Richardson truncation estimate where stage 2 ran, else 0

    def take(self, rows) -> Measured:
        return Measured(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


class Session:
    """One chunk program, J(θ), the rounding level, eps and tol for a check's probes."""

    def __init__(
        self, problem: Problem, kind: str, num_probes: int, eps=None, key=None, project=None, chunk_size=None, batching=None
    ):
        self.problem = p = problem
        stencil = p.stencil
        self.xp = xp = p.xp
        n = p.lay.n
        m = stencil.evals_per_probe
        devices = 1 if _engine.mesh() is None else jax.device_count()
        chunk = _engine.chunk_size(n, num_probes + 1, m, devices) if chunk_size is None else -(-chunk_size // devices) * devices
        plan = _engine.Plan(kind, m, chunk, batching or _engine.VMAP, stencil.complex)
        self.runner = p.runner(plan, key, project)
        self.kind = kind
        self.notes: list[str] = []
        self.extra_evals = 0  # evaluations counted apart from the runner's (traced stage 2)

        # J(θ) and the noise probe: 3 coordinates (the middles of the two largest leaves,
        # the largest |θ|), t·δ for t = ±1..±4, plus a null probe; one call.
        bases, offsets, t = _noise.ec_layout(m)
        coords = self._noise_coordinates()
        delta = _noise.ec_step(p.lay.low_dtype)
        starts = xp.repeat(xp.stack(coords), len(bases))
        base = xp.tile(xp.asarray(delta * bases, p.dtype), len(coords)) / xp.maximum(
            1, xp.abs(p.theta_x[starts]).astype(p.dtype)
        )
        probes = self._probes(xp.concatenate([starts, xp.zeros(1, starts.dtype)]), xp.concatenate([base, xp.zeros(1, p.dtype)]))
        values, _, _ = self.runner.run(probes, offsets.astype(p.dtype))
        self.center = values[-1, 0]
        levels = [_noise.level(xp, values[i * len(bases) : (i + 1) * len(bases)], t, self.center) for i in range(len(coords))]
        u_loss = float(jnp.finfo(jnp.real(self.center).dtype).eps)
        floor = 0.5 * u_loss * xp.abs(xp.real(self.center))
        self.level = xp.maximum(xp.median(xp.stack(levels), axis=0), floor)  # ε_J ([out])
        scale = xp.maximum(xp.abs(xp.real(self.center)), xp.max(self.level) / u_loss)
        rel = self.level / xp.where(scale > 0, scale, 1)  # relative to |J(θ)| (0 when J is exactly 0 and noiseless)
        self.rel_level = xp.max(rel) if xp.ndim(rel) else rel
        nominal_eps, nominal_tol = _stencils.defaults(p.lay.low_dtype, p.method, self.rel_level, xp)
        self.eps = nominal_eps if eps is None else xp.asarray(eps, p.dtype)
        self.tol = nominal_tol if p.tol is None or not p.tol_given else xp.asarray(p.tol, p.dtype)
        self.eps = xp.asarray(self.eps, p.dtype)
        self.tol = xp.asarray(self.tol, p.dtype)
        self.lower_precision = _stencils.lower_precision(p.lay.low_dtype, self.rel_level, xp)
        # a failure needs a discrepancy beyond the noise and above this relative floor: `tol`
        # when given, else u^(2/3) of the loss's real precision (the analytic side's own rounding)
        u = float(np.finfo(p.lay.low_dtype).eps)
        self.floor = self.tol if p.tol_given else xp.maximum(self.rel_level, u) ** (2 / 3)
        self.key = key
        self.final = p.lay.low_dtype == np.float64  # nothing more precise can be tried

    @property
    def evals(self):
        """Loss evaluations so far (the probes' stencil points, padding not counted)."""
        return self.runner.evals + self.extra_evals

    def _noise_coordinates(self):
        p, xp = self.problem, self.problem.xp
        order = np.argsort([-s for s in p.lay.sizes], kind="stable")
        picks = [p.lay.offsets[k] + p.lay.sizes[k] // 2 for k in order[:2] if p.lay.sizes[k]]
        picks = [xp.asarray(j, np.int32) for j in picks]
        picks.append(xp.argmax(xp.abs(p.theta_x)).astype(np.int32))
        while len(picks) < 3:
            picks.append(picks[-1])
        return picks

    def _probes(self, starts, base) -> _probes.Probes:
        if self.kind == _probes.COORDS:
            return _probes.Probes(starts, base)
        xp = self.xp
        ones = xp.ones(starts.shape, np.int32)
        return _probes.Probes(starts, base, ones, xp.zeros(starts.shape, np.int32), _probes.BLOCKS)

    def evaluate(self, probes: _probes.Probes, doubled: bool = False, count: bool = True):
        """(D, values, h, proj) at step h (or 2h) for every probe."""
        st = self.problem.stencil
        offsets = np.asarray(st.doubled if doubled else st.offsets)
        values, h, proj = self.runner.run(probes, offsets, count=count)
        return _noise.derivative(self.xp, st, values, self.center, h, 2.0 if doubled else 1.0), values, h, proj

    def rounding_bound(self, D, h):
        return _noise.rounding(self.xp, self.problem.stencil, self.level, self.rel_level, D, h)

    def measure(self, probes: _probes.Probes, analytic=None, top_k: int | None = None, force: bool = False) -> Measured:
        """Stage 1 for all probes, stage 2 where it can change a verdict (see the module docstring).

        `analytic` (P[, out]): the analytic values; None takes the projections ⟨project, d⟩.
        """
        xp, st = self.xp, self.problem.stencil
        D, v1, h, proj = self.evaluate(probes)
        A = proj if analytic is None else analytic
        A = xp.asarray(A, D.dtype)
        r = _noise.rounding(xp, st, self.level, self.rel_level, D, h)
        diff = xp.abs(D - A)
        finite = xp.isfinite(D) & xp.isfinite(A)
        suspicious = ((diff > r) | force) & finite
        per_probe = suspicious if D.ndim == 1 else xp.any(suspicious, axis=tuple(range(1, D.ndim)))
        P = D.shape[0]
        if self.problem.traced:
            k = P if top_k is None else min(P, top_k)
            score = xp.where(per_probe, xp.max(diff / xp.where(r > 0, r, 1), axis=tuple(range(1, D.ndim))) if D.ndim > 1 else diff / xp.where(r > 0, r, 1), -1.0)
            _, rows = jax.lax.top_k(score, k)
            valid = per_probe[rows]
        else:
            rows = np.flatnonzero(per_probe)
            valid = np.ones(rows.shape, bool)
        bound = r
        kink = xp.zeros(D.shape, bool)
        measured = xp.zeros(P, bool)
        trunc = xp.zeros(D.shape, D.dtype)
        if rows.shape[0]:
            sub = probes.take(rows)
            if self.problem.traced:  # rows beyond the real need: null probes, results ignored
                sub = dataclasses.replace(sub, base=xp.where(valid, sub.base, 0))
            D2, v2, _, _ = self.evaluate(sub, doubled=True, count=not self.problem.traced)
            if self.problem.traced:
                self.extra_evals = self.extra_evals + st.evals_per_probe * xp.sum(valid.astype(np.int32))
            t = _noise.truncation(xp, st, D[rows], D2)
            b2 = r[rows] + 2 * t
            if st.one_sided:
                scale = xp.sqrt(xp.mean(xp.where(finite, D * D, 0)))
                k2, margin = _noise.kinks(xp, st, v1[rows], v2, self.center, h[rows], A[rows], D[rows], b2, self.level, self.floor, scale)
                b2 = xp.where(k2, margin, b2)
            else:
                k2 = xp.zeros(b2.shape, bool)
            vcol = valid.reshape(valid.shape + (1,) * (D.ndim - 1))
            if self.problem.traced:
                bound = bound.at[rows].set(xp.where(vcol, b2, bound[rows]))
                kink = kink.at[rows].set(vcol & k2)
                measured = measured.at[rows].set(valid)
                trunc = trunc.at[rows].set(xp.where(vcol, t, 0))
            else:
                bound, kink, measured, trunc = bound.copy(), kink.copy(), measured.copy(), trunc.copy()
                bound[rows], kink[rows], measured[rows], trunc[rows] = b2, k2, True, t
        mcol = measured.reshape(measured.shape + (1,) * (D.ndim - 1))
        known = ~suspicious | mcol
        return Measured(D, A, bound, kink, known, h, measured, trunc)
