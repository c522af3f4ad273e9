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
import numpy as np

from . import _engine, _jit, _noise, _partial, _probes, _stencils, _validate
from ._problem import LOSS, Problem
from ._typing import Array


@dataclasses.dataclass
class Measured:
    """Per probe (leading axis), vector-valued functions add a trailing output axis."""

    numeric: Array
    analytic: Array
    bound: Array  # what the finite difference alone may be off by
    kink: Array  # a kink, with the analytic value a valid subgradient
    known: Array  # False: needed a truncation estimate it did not get (traced, beyond top_k)
    step: Array  # h per probe
    doubled: Array  # stage 2 (step 2h) ran for this probe
    truncation: Array  # the Richardson truncation estimate where stage 2 ran, else 0

    def take(self, rows) -> Measured:
        return Measured(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


class Session:
    """One chunk program, J(θ), the rounding level, eps and tol for a check's probes."""

    def __init__(
        self,
        problem: Problem,
        kind: str,
        num_probes: int,
        eps=None,
        key=None,
        project=None,
        chunk_size=None,
        partial=True,
        resolve=False,
    ):
        self.problem = p = problem
        stencil = p.stencil
        self.xp = xp = p.xp
        n = p.lay.n
        m = stencil.evals_per_probe
        self.devices = 1 if _engine.mesh() is None else jax.device_count()
        self.chunk_size = chunk_size
        self.kind = kind
        self.notes: list[str] = []
        self.extra_evals = 0  # evaluations counted apart from the runners' (traced stage 2)
        self.resolve_evals = 0  # of all evaluations, those spent resolving unresolved leaves (host)
        self.group_floor = None  # per-group fail floors once some groups were re-measured in float64
        self.key = key
        self.leaf_eval: tuple[str, ...] = ()  # per leaf of the params: the path its probes took
        jaxpr = self._trace(partial and kind == _probes.COORDS and p.kind == LOSS and not stencil.complex)
        self.batching = _engine.batching(jaxpr)
        plan = _engine.Plan(kind, m, self._chunk(n, num_probes + 1), self.batching, stencil.complex)
        self._plain = lambda: p.runner(plan, key, project)
        self._plain_runner = None
        self.routes = self._routes() if self.traced_loss is not None else []

        # eps and tol: the nominal values of θ's dtype until the noise probe has measured the
        # loss's own rounding level (`first`)
        self.user_eps = eps
        _validate.step(eps, p.lay, None if p.traced else p.theta_x, p.method)  # no step may round to 0
        # unresolved leaves of a float32 check on the host are re-checked in float64 (jgc/_resolve.py)
        self.recheck = resolve and not p.traced and p.lay.low_dtype == np.float32
        nominal_eps, nominal_tol = _stencils.defaults(p.lay.low_dtype, p.method, 0.0, xp, recheck=self.recheck)
        self.eps = xp.asarray(nominal_eps if eps is None else eps, p.dtype)
        self.tol = xp.asarray(nominal_tol if not p.tol_given else p.tol, p.dtype)
        self.level: Array = None  # ε_J, set by the noise probe (`first`)
        self.rel_level: Array = None
        self.center: Array = None  # J(θ)
        self.final = p.lay.low_dtype == np.float64  # nothing more precise can be tried

    # -------------------------------------------------------------- the noise probe

    def _noise_probes(self):
        """J(θ) and the noise probe: 3 coordinates (the middles of the two largest leaves, the
        largest |θ|), t·δ for t = ±1..±4, and a null probe (J(θ)), with the offsets they need."""
        p, xp = self.problem, self.xp
        bases, offsets, t = _noise.ec_layout(p.stencil.evals_per_probe)
        coords = self._noise_coordinates()
        delta = _noise.ec_step(p.lay.low_dtype, _stencils.nominal_eps(p.lay.low_dtype, p.method))
        starts = xp.repeat(xp.stack(coords), len(bases))
        base = xp.tile(xp.asarray(delta * bases, p.dtype), len(coords)) / xp.maximum(1, xp.abs(p.theta_x[starts]).astype(p.dtype))
        probes = self._probes(xp.concatenate([starts, xp.zeros(1, starts.dtype)]), xp.concatenate([base, xp.zeros(1, p.dtype)]))
        return probes, offsets, (len(coords), len(bases), t)

    def _noise_level(self, values, layout):
        """ε_J from the noise probe's values (the last row: J(θ)); then eps, tol and the fail floor."""
        p, xp = self.problem, self.xp
        num, per, t = layout
        self.center = values[-1, 0]
        levels = [_noise.level(xp, values[i * per : (i + 1) * per], t, self.center) for i in range(num)]
        u_loss = float(np.finfo(xp.real(self.center).dtype).eps)
        floor = 0.5 * u_loss * xp.abs(xp.real(self.center))
        level = xp.maximum(xp.median(xp.stack(levels), axis=0), floor)  # ε_J ([out])
        magnitude = xp.abs(xp.real(self.center))
        if xp.ndim(level):  # a vector function: the 3 probed coordinates may not reach every output, so
            # each output gets at least the relative level seen anywhere, at its own (or the typical) size
            magnitude = xp.maximum(magnitude, xp.sqrt(xp.mean(magnitude * magnitude)))
        # relative to max(1, |J(θ)|), as steps are to max(1, |θ_j|): a loss that is ~0 by cancellation
        # of terms of order 1 keeps their rounding level (its step need not grow); at most 1e-3
        scale = xp.maximum(xp.maximum(magnitude, 1.0), 1e3 * xp.max(level))
        rel = level / xp.where(scale > 0, scale, 1)  # 0 when J is exactly 0 and noiseless
        self.rel_level = xp.max(rel) if xp.ndim(rel) else rel
        self.level = xp.maximum(level, self.rel_level * magnitude) if xp.ndim(level) else level
        u = float(np.finfo(p.lay.low_dtype).eps)
        if not p.traced:  # the defaults of the loss's real precision (under a trace: θ's dtype's)
            eps, tol = _stencils.defaults(p.lay.low_dtype, p.method, self.rel_level, xp, recheck=self.recheck)
            self.eps = self.eps if self.user_eps is not None else np.asarray(eps, p.dtype)
            self.tol = self.tol if p.tol_given else np.asarray(tol, p.dtype)
            if bool(_stencils.lower_precision(p.lay.low_dtype, self.rel_level)):
                u = float(np.finfo(np.float32).eps)
                self.notes.append(
                    f"the loss rounds like float32 (relative rounding level {float(self.rel_level):.1e}): float32 steps and tolerance"
                )
        # a failure needs a discrepancy beyond the noise and above this relative floor: `tol`
        # when given, else u^(2/3) of the loss's real precision (the analytic side's own rounding)
        self.floor = self.tol if p.tol_given else xp.maximum(self.rel_level, u) ** (2 / 3)

    def first(self, probes: _probes.Probes, analytic=None, top_k: int | None = None, doubled: bool = True):
        """The first measurement: the noise probe (in the same call as stage 1 where the offsets
        allow), then `measure`. Returns (Measured, the probes with the steps used)."""
        p, xp = self.problem, self.xp
        noise, offsets, layout = self._noise_probes()
        nominal = dataclasses.replace(probes, base=xp.broadcast_to(self.eps, probes.base.shape).astype(p.dtype))
        merged = tuple(np.asarray(offsets, float)) == tuple(float(o.real) for o in p.stencil.offsets) and not p.stencil.complex
        if merged:  # one call: J(θ), the noise probe and stage 1 (one copy of the loss in a traced program)
            values, h, proj = self.run(_probes.concat_like(noise, nominal, xp), np.asarray(p.stencil.offsets))
            k = len(noise)
            self._noise_level(values[:k], layout)
            stage1 = (values[k:], h[k:], proj[k:])
        else:
            values, _, _ = self.run(noise, offsets.astype(p.dtype))
            self._noise_level(values, layout)
            stage1 = None
        base = xp.broadcast_to(self.eps, probes.base.shape).astype(p.dtype)
        if stage1 is not None and not p.traced and not np.array_equal(np.asarray(nominal.base), np.asarray(base)):
            stage1 = None  # the loss rounds more than its dtype: stage 1 again with its steps
        probes = dataclasses.replace(probes, base=base)
        return self.measure(probes, analytic, top_k, stage1=stage1, doubled=doubled), probes

    # -------------------------------------------------------------- runners

    @property
    def runner(self) -> _engine.Runner:
        """The plain engine: the whole function per probe (compiled on first use)."""
        if self._plain_runner is None:
            self._plain_runner = self._plain()
        return self._plain_runner

    def _chunk(self, n: int, num_probes: int) -> int:
        if self.chunk_size is not None:
            return -(-self.chunk_size // self.devices) * self.devices
        return _engine.chunk_size(n, num_probes, self.problem.stencil.evals_per_probe, self.devices)

    def _trace(self, partial: bool):
        """The loss's jaxpr (for the batching choice) and, on the host, the partial-evaluation plan."""
        p = self.problem
        self.traced_loss = None
        if partial and p.traced:  # inside a trace every probe runs the whole loss (one program)
            self.leaf_eval = tuple(_partial.PLAIN_TRACED if c else "" for c in p.lay.checked)
        elif partial:
            self.traced_loss = _partial.trace(p.fn, p.lay, p.params, p.args, p.stencil)
            self.leaf_eval = self.traced_loss.paths
            return self.traced_loss.closed.jaxpr
        return jax.make_jaxpr(p.fun)(p.theta, p.data).jaxpr

    def _routes(self):
        """Runners for the leaves on the partial and sparse paths: (first coordinate, end, runner)."""
        p, traced = self.problem, self.traced_loss
        assert traced is not None
        lay = p.lay
        leaves = [(k, i) for k, i in enumerate(lay.checked_index) if traced.paths[i] in (_partial.PARTIAL, _partial.SPARSE)]
        if not leaves:
            return []
        spec = _partial.Base(p.fun.ref, lay, p.static, traced.sig, traced)
        base = p.call(("base", spec), spec, list(traced.closed.consts))  # the args' values flow in
        routes, m = [], p.stencil.evals_per_probe
        for k, i in leaves:
            o, s = lay.offsets[k], lay.sizes[k]
            plan = _engine.Plan(_probes.COORDS, m, self._chunk(s, s), self.batching)
            if traced.paths[i] == _partial.PARTIAL:
                fun = _partial.LeafFun(p.fun.ref, lay, p.static, k, traced.sig, traced)
                body = _engine.chunk_function(fun, plan)
            else:
                fun = _partial.EntryFun(p.fun.ref, lay, p.static, k, traced.sig, traced)
                body = _engine.entry_chunk_function(fun, plan, lay.shapes[i], np.dtype(lay.dtypes[i]))
            program = _jit.program(("leaf", fun, plan), body)
            theta_k = _engine.to_device(p.theta_x[o : o + s])
            routes.append((o, o + s, _engine.Runner(program, plan, theta_k, base)))
        return routes

    def run(self, probes: _probes.Probes, offsets, count: bool = True):
        """(values, h, proj) for every probe, each on the runner of its leaf's path."""
        if not self.routes or probes.kind != _probes.COORDS:
            return self.runner.run(probes, offsets, count)
        start = np.asarray(probes.start)
        taken = np.zeros(start.shape, bool)
        parts = []
        for lo, hi, runner in self.routes:
            rows = np.flatnonzero((start >= lo) & (start < hi))
            taken[rows] = True
            if rows.size:
                sub = probes.take(rows)
                sub = dataclasses.replace(sub, start=np.asarray(sub.start) - lo)
                parts.append((rows, runner.run(sub, offsets, count)))
        rows = np.flatnonzero(~taken)
        if rows.size:
            parts.append((rows, self.runner.run(probes.take(rows), offsets, count)))
        first = parts[0][1]
        out = [np.zeros((start.size,) + np.shape(x)[1:], np.asarray(x).dtype) for x in first]
        for rows, vals in parts:
            for o, v in zip(out, vals, strict=True):
                o[rows] = v
        return tuple(out)

    @property
    def evals(self):
        """Loss evaluations so far (the probes' stencil points, padding not counted)."""
        runners = [r for _, _, r in self.routes] + ([self._plain_runner] if self._plain_runner is not None else [])
        return sum(r.evals for r in runners) + self.extra_evals

    def _noise_coordinates(self):
        p, xp = self.problem, self.problem.xp
        order = np.argsort([-s for s in p.lay.sizes], kind="stable")
        picks = [p.lay.offsets[k] + p.lay.sizes[k] // 2 for k in order[:2] if p.lay.sizes[k]]
        picks: list[Array] = [xp.asarray(j, np.int32) for j in picks]
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
        values, h, proj = self.run(probes, offsets, count=count)
        return _noise.derivative(self.xp, st, values, self.center, h, 2.0 if doubled else 1.0), values, h, proj

    def rounding_bound(self, D, h):
        return _noise.rounding(self.xp, self.problem.stencil, self.level, self.rel_level, D, h)

    def measure(
        self, probes: _probes.Probes, analytic=None, top_k: int | None = None, force: bool = False, stage1=None, doubled=True
    ) -> Measured:
        """Stage 1 for all probes, stage 2 where it can change a verdict (see the module docstring).

        `analytic` (P[, out]): the analytic values; None takes the projections ⟨project, d⟩.
        `stage1`: (values, h, proj) already evaluated at step h. `doubled=False`: stage 1 only.
        """
        xp, st = self.xp, self.problem.stencil
        if stage1 is None:
            D, v1, h, proj = self.evaluate(probes)
        else:
            v1, h, proj = stage1
            D = _noise.derivative(xp, st, v1, self.center, h)
        A = proj if analytic is None else analytic
        A = xp.asarray(A, D.dtype)
        r = _noise.rounding(xp, st, self.level, self.rel_level, D, h)
        diff = xp.abs(D - A)
        finite = xp.isfinite(D) & xp.isfinite(A)
        suspicious = ((diff > r) | force) & finite & doubled
        per_probe = suspicious if D.ndim == 1 else xp.any(suspicious, axis=tuple(range(1, D.ndim)))
        P = D.shape[0]
        if self.problem.traced:
            k = P if top_k is None else min(P, top_k)
            score = xp.where(
                per_probe,
                xp.max(diff / xp.where(r > 0, r, 1), axis=tuple(range(1, D.ndim)))
                if D.ndim > 1
                else diff / xp.where(r > 0, r, 1),
                -1.0,
            )
            _, rows = jax.lax.top_k(score, k)
            valid = per_probe[rows]
        else:
            rows = np.flatnonzero(per_probe)
            valid = np.ones(rows.shape, bool)
        bound: Array = r
        kink: Array = xp.zeros(D.shape, bool)
        measured: Array = xp.zeros(P, bool)
        trunc: Array = xp.zeros(D.shape, D.dtype)
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
                k2, margin = _noise.kinks(
                    xp, st, v1[rows], v2, self.center, h[rows], A[rows], D[rows], b2, self.level, self.floor, scale
                )
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
