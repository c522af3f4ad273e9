"""The one pipeline: setup → calibrate → measure → decide → settle, for any probe set.

1. **setup**: the `Problem` (θ, the function of θ, stencil) and the analytic side (`Side`:
   the hand-written gradient, or a rule's values along each probe), a probe set and how
   its entries group into leaves (`Grouping`), and the `Engine` that evaluates the
   function along probes (each leaf on its path);
2. **calibrate**: the noise probe, in the same engine call as the first measurement where
   the offsets allow, gives a frozen `Calibration` (J(θ), rounding level, eps, tol,
   precision, determinism);
3. **measure**: the stencil along every probe → `Measured`;
4. **decide**: `_verdict.decide` → per-group and overall verdicts;
5. **settle** (concrete inputs): more passes of the same steps — resolve what is open,
   confirm what failed (`jgc/_resolve.py`) — each returning a new state.

A *mode* is a probe set on θ and its grouping: every coordinate (`FULL`), a stratified
sample of coordinates (`SAMPLED`), random directions on each leaf (`DIRECTIONS`), a
vector-valued function's probes paired with its output leaves (`jgc/_layers.py`). `run` is
the composition for gradient checks; it runs on the host (compiled programs, data-dependent
passes) or inside a trace (the caller's `jit`/`vmap`: one program, static shapes).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np

from . import _diagnose, _engine, _jit, _probes, _resolve, _stencils, _tree, _validate, _verdict
from ._engine import Engine
from ._measure import Calibration, Measured, calibrate, measure, noise_probe, precision_of, rounding_bound
from ._problem import LOSS, Problem
from ._result import Autodiff, Diagnosis, DirectionCheck, GradCheck, Noise, Run, SampledCheck, path_codes
from ._typing import Array

FULL, SAMPLED, DIRECTIONS = "full", "sampled", "directions"


@dataclasses.dataclass(frozen=True)
class Options:
    """Static options of a check (hashable)."""

    method: str = "central"
    chunk_size: int | None = None
    autodiff: bool = False
    mode: str = FULL
    coords: int = 0  # SAMPLED: how many coordinates
    num: int = 0  # DIRECTIONS: directions per leaf
    resolve: bool = True
    partial: bool = True  # partial evaluation where the cost model says it pays (jgc/_partial/)
    result: type = GradCheck
    loss_name: str = "loss_fn"
    grad_name: str = "grad_fn"


# ---------------------------------------------------------------- setup


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How a check's entries group into leaves (the verdict's groups).

    An entry is one probe of a scalar function, or one (probe, output) pair of a vector
    function (`order[j]`: the flat (probe, output) index of entry j, outputs per probe
    `outputs`). `sizes`: the coordinates each group stands for. `coordinate_groups`: the
    group of each θ coordinate, where groups are leaves of the params.
    """

    seg: np.ndarray
    k: int
    sizes: tuple
    order: np.ndarray | None = None
    outputs: int = 1
    coordinate_groups: np.ndarray | None = None

    def flat(self, x):
        """(P[, out]) per-probe values → (e,) entries in group order (a per-probe (P,) array of a
        vector function is repeated for each output)."""
        if self.order is None:
            return x
        xp = np if isinstance(x, np.ndarray) else jax.numpy
        if x.ndim == 1:
            x = xp.broadcast_to(x[:, None], (x.shape[0], self.outputs))
        return x.reshape(-1)[self.order]

    def measured(self, m: Measured) -> Measured:
        if self.order is None:
            return m
        return Measured(*(self.flat(getattr(m, f.name)) for f in dataclasses.fields(Measured)))

    def _entry_rows(self) -> np.ndarray:
        return np.arange(self.seg.size) if self.order is None else self.order // self.outputs

    def rows_of(self, entries) -> np.ndarray:
        """(e,) entry mask → (P,) the probes holding any of them."""
        rows = self._entry_rows()
        out = np.zeros(int(rows.max()) + 1 if rows.size else 0, bool)
        out[rows[np.asarray(entries, bool)]] = True
        return out

    def groups_of(self, row_mask, every: bool = False) -> np.ndarray:
        """(P,) probe mask → (k,) the groups with an entry in those probes (`every`: all their entries)."""
        sel = np.asarray(row_mask, bool)[self._entry_rows()]
        hit = np.bincount(self.seg[sel], minlength=self.k) > 0
        if not every:
            return hit
        return hit & (np.bincount(self.seg[~sel], minlength=self.k) == 0)

    def groups_of_rows(self, rows) -> np.ndarray:
        mask = np.zeros(self._entry_rows().max() + 1 if self.seg.size else 0, bool)
        mask[np.asarray(rows, int)] = True
        return self.groups_of(mask)


@dataclasses.dataclass(frozen=True)
class Side:
    """The analytic side: the gradient (n,) when there is one, and the analytic value of every
    probe (P[, out]; None: the engine projects `vector` on the probes, for random directions).
    Analytic values do not depend on the steps, so re-measurements reuse them by row."""

    vector: Array | None
    values: Array | None
    auto: Array | None = None
    host_grad: bool = False
    scale: Array | None = None  # what rounding one intermediate of the loss moves J by (`_jaxpr.term_scale`)

    def of(self, rows=None):
        if self.values is None:
            return None
        return self.values if rows is None else self.values[rows]


def gradient_side(problem: Problem, grad_fn, options: Options, probes, scale: bool = False) -> Side:
    """The analytic side; with the loss's term scale under a trace or when `scale` asks (on the
    host a first pass goes without it: `execute` adds it where the verdict can depend on it)."""
    analytic, auto, host, term = problem.gradient(grad_fn, options.autodiff, options.grad_name, scale or problem.traced)
    values = None if probes.kind == _probes.BLOCKS else analytic[probes.start]
    return Side(analytic, values, auto, host, term)


def probe_set(problem: Problem, options: Options, key):
    """(probes with base 0, grouping, result extras) of a gradient check's mode."""
    lay, xp = problem.lay, problem.xp
    if options.mode == FULL:
        probes = _probes.Probes(xp.arange(lay.n, dtype=np.int32), xp.zeros(lay.n, problem.dtype))
        return probes, Grouping(lay.segments, lay.k, lay.sizes, coordinate_groups=lay.segments), {}
    if options.mode == SAMPLED:
        counts = _probes.allocate(lay.sizes, options.coords)
        if problem.traced:
            index = _probes.draw(xp, key, lay=lay, counts=counts)
        else:  # compiled once per layout, not op by op
            draw = _jit.program(("draw", lay, counts), functools.partial(_probes.draw, jax.numpy, lay=lay, counts=counts))
            index = _engine.to_host(draw(key))
        seg = np.repeat(np.arange(lay.k, dtype=np.int32), counts)
        probes = _probes.Probes(index, xp.zeros(index.shape, problem.dtype))
        return probes, Grouping(seg, lay.k, lay.sizes, coordinate_groups=lay.segments), dict(index=index, sampled=sum(counts))
    num = options.num
    probes = _probes.leaf_blocks(lay.offsets, lay.sizes, num, 0.0)
    if problem.traced:
        probes = jax.tree_util.tree_map(lambda x: xp.asarray(x), probes)
    seg = np.repeat(np.arange(lay.k, dtype=np.int32), num)
    return probes, Grouping(seg, lay.k, lay.sizes, coordinate_groups=lay.segments), dict(num_directions=num)


def top_k(num_probes: int, engine: Engine) -> int:
    """Under a trace, how many probes may get the doubled step (a static number)."""
    return min(num_probes, max(engine.runner.plan.chunk, num_probes // 4))


# ---------------------------------------------------------------- calibrate + measure


def calibrated(
    problem: Problem, engine: Engine, side: Side, probes, eps=None, tol=None, recheck=False, k=None, doubled=True, rows=None
):
    """The noise probe and the first measurement of `probes` (rows `rows` of the check's probe
    set; default all), in one engine call where the offsets allow.

    Returns (Calibration, Measured, the probes with the steps used, loss evaluations)."""
    xp, st = problem.xp, problem.stencil
    _validate.step(eps, problem.lay, None if problem.traced else problem.theta_x, problem.method)  # no step may round to 0
    noise = noise_probe(problem, engine, side.vector, eps)
    start_eps = _stencils.nominal_eps(precision_of(problem, engine), problem.method) if eps is None else eps
    nominal = dataclasses.replace(probes, base=xp.broadcast_to(xp.asarray(start_eps, problem.dtype), probes.base.shape))
    merged = tuple(np.asarray(noise.offsets, float)) == tuple(float(o.real) for o in st.offsets) and not st.complex
    q = len(noise.probes)
    repeat = True if problem.traced else np.arange(q + (len(probes) if merged else 0)) < q
    if merged:
        values, h, proj, spread, evals = engine.run(
            _probes.concat_like(noise.probes, nominal, xp), np.asarray(st.offsets), repeat
        )
        stage1 = (values[q:], h[q:], proj[q:])
        values = values[:q]
    else:
        values, _, _, spread, evals = engine.run(noise.probes, noise.offsets.astype(problem.dtype), repeat)
        stage1 = None
    # under a trace the merged stage 1 fixed the step: the defaults of θ's precision
    fixed_eps = eps if eps is not None or not (problem.traced and merged) else start_eps
    cal = calibrate(problem, engine, noise, values, spread, fixed_eps, tol, recheck, side.scale)
    base = xp.broadcast_to(cal.eps, probes.base.shape).astype(problem.dtype)
    if stage1 is not None and not problem.traced and not np.array_equal(np.asarray(nominal.base), np.asarray(base)):
        stage1 = None  # the loss rounds more than its dtype: stage 1 again with its steps
    probes = dataclasses.replace(probes, base=base)
    m, e = measure(engine, cal, probes, side.of(rows), top_k=k, stage1=stage1, doubled=doubled)
    # a leaf the loss does not read (a constant loss) has derivative exactly 0: no error to bound
    exact = problem.exact_zeros(probes.start, m.numeric)
    if exact is not None:
        m = dataclasses.replace(m, bound=xp.where(exact, 0, m.bound), known=m.known | exact)
    return cal, m, probes, evals + e


def final_of(problem: Problem, cal: Calibration, k: int):
    """Nothing more precise can be tried: θ is float64, or the loss rounds like float16/bfloat16."""
    xp = problem.xp
    f = (problem.lay.low_dtype == np.float64) | (cal.precision >= _stencils.PRECISIONS.index("float16"))
    return xp.broadcast_to(xp.asarray(f), (k,)) if not problem.traced else xp.asarray(f)


def decide(problem: Problem, grouping: Grouping, m: Measured, cal: Calibration, final):
    xp = problem.xp
    return _verdict.decide(xp, grouping.measured(m), grouping.seg, grouping.k, grouping.sizes, cal.tol, final, cal.deterministic)


def host64(m: Measured) -> Measured:
    """Host arrays, floats in float64 (so re-measured float64 values keep their precision)."""
    out = {}
    for f in dataclasses.fields(Measured):
        v = np.asarray(getattr(m, f.name))
        out[f.name] = v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v
    return Measured(**out)


Build = Callable  # build(params, args) -> (Problem, Side): the setup in whatever precision its inputs are


class Float64:
    """A float32 check's setup once more in float64 (x64 for each call only), built on first use
    and shared by every probe set measured with it (`at`): the float64 calibration comes from
    the first request's engine call. It is used only when it evaluates the same function
    (`_resolve.same_function`); `code` says why not."""

    def __init__(self, build: Build, engine_of: Callable, problem: Problem, side: Side, cal: Calibration, facts=None):
        self.build, self.engine_of, self.problem, self.side, self.cal32 = build, engine_of, problem, side, cal
        self.facts32 = facts
        self.code: int | None = None

    def _start(self, probes, rows, grouping):
        p = self.problem
        if int(self.cal32.precision) != _stencils.PRECISIONS.index("float32"):
            return _resolve.LOWER_PRECISION, None, 0
        params, args = _tree.to_float64((p.params, p.args))
        try:
            if p.kind == "loss":
                out = jax.eval_shape(lambda: p.fn(params, *args))
                if jax.numpy.dtype(out.dtype) not in (np.float64, np.complex128):
                    return _resolve.NOT_FLOAT64, None, 0
            p64, side64 = self.build(params, args)
        except (TypeError, ValueError):  # functions that do not follow their inputs' dtype
            return _resolve.NOT_TRACEABLE, None, 0
        engine = self.engine_of(p64, side64, len(rows))
        cal, m, _, evals = calibrated(p64, engine, side64, probes.take(rows), tol=self.cal32.tol, rows=rows)
        if not _resolve.same_function(self.cal32, cal, self.side.vector, side64.vector, grouping, self.facts32, engine.facts):
            return _resolve.OTHER_FUNCTION, None, evals
        self.p64, self.side64, self.engine, self.cal = p64, side64, engine, cal
        return _resolve.RAN, host64(m), evals

    def at(self, probes, grouping, values64: Callable | None = None):
        """`measure(rows, scale)` for the probe set `probes`: (Measured in float64 or None, evals,
        recheck code) for its rows `rows` at scale × float64's step. `values64(side64, rows)`: the
        analytic values in float64 (default: the float64 side's own)."""
        probes = jax.tree_util.tree_map(np.asarray, probes)

        def measure_rows(rows, scale):
            with jax.enable_x64(True):
                evals = 0
                if self.code is None:
                    self.code, first, evals = self._start(probes, rows, grouping)
                    if first is not None and scale == 1.0:
                        return first, evals, self.code
                if self.code != _resolve.RAN:
                    return None, evals, self.code
                sub = probes.take(rows)
                p = dataclasses.replace(
                    sub, base=np.broadcast_to(np.asarray(self.cal.eps, np.float64) * scale, sub.base.shape).copy()
                )
                analytic = self.side64.of(rows) if values64 is None else values64(self.side64, rows)
                m, e = measure(self.engine, self.cal, p, analytic, force=True)
                return host64(m), evals + int(e), self.code

        return measure_rows


def passes(
    problem: Problem, engine: Engine, side: Side, cal: Calibration, grouping: Grouping, probes, float64: Float64 | None
) -> _resolve.Passes:
    """The `Passes` of a probe set on concrete inputs: more measurements in its precision and in float64."""

    def measure_here(rows, scale):
        sub = probes.take(rows)
        p = dataclasses.replace(sub, base=(np.asarray(sub.base) * np.asarray(scale)).astype(problem.dtype))
        m, e = measure(engine, cal, p, side.of(rows), force=True)
        return host64(m), e

    return _resolve.Passes(
        grouping,
        problem.stencil,
        measure_here,
        lambda D, h: rounding_bound(engine, cal, D, h),
        lambda m, c, final: decide(problem, grouping, m, c, final),
        None if float64 is None else float64.at(probes, grouping),
        None if problem.tol_given else _stencils.default_tol(problem.lay.low_dtype, problem.method),
    )


def float64_for(
    problem: Problem, side: Side, cal: Calibration, build: Build | None, engine_of: Callable, engine: Engine
) -> Float64 | None:
    """The float64 re-check of a float32 check on concrete inputs (None where it cannot apply)."""
    if build is None or problem.traced or problem.lay.low_dtype != np.float32:
        return None
    return Float64(build, engine_of, problem, side, cal, engine.facts)


def _passes(problem, side, probes, grouping, engine_of, build, options, eps, tol, engine):
    """Calibrate, measure, decide and (concrete inputs) settle: (final state, evaluations of the first pass)."""
    recheck = options.resolve and build is not None and not problem.traced and problem.lay.low_dtype == np.float32
    k = top_k(len(probes), engine) if problem.traced else None
    cal, measured, probes, evals = calibrated(problem, engine, side, probes, eps, tol, recheck, k)
    state = first_state(problem, grouping, measured, cal, options)
    if options.resolve and not problem.traced:
        float64 = float64_for(problem, side, cal, build, engine_of, engine)
        state = _resolve.settle(passes(problem, engine, side, cal, grouping, probes, float64), state)
    return state, evals


def execute(
    problem: Problem,
    side: Side,
    probes,
    grouping: Grouping,
    engine_of: Callable,
    build: Build | None,
    options: Options,
    eps,
    tol,
    key,
):
    """Every step after setup: calibrate, measure, decide, and (concrete inputs) settle.

    `engine_of(problem, side, num_probes)` makes the engine of a setup; `build` remakes the
    setup from float64 inputs (None: no float64 re-check). Returns (engine, final state,
    loss evaluations outside the final state's resolve and confirm counts: its first pass, and
    all of an earlier run at the measured level where the term scale raised it)."""
    engine = engine_of(problem, side, len(probes))
    state, evals = _passes(problem, side, probes, grouping, engine_of, build, options, eps, tol, engine)
    lazy = side.scale is None and problem.kind == LOSS and not problem.traced and not engine.facts.callback
    if lazy and not np.all(state.decision.passed):
        # The term scale (`_jaxpr.term_scale`) is a lower bound on the rounding level; it costs a
        # compile of a reverse pass, so a check that passes goes without it. Where something did
        # not pass, the level is what it sets where it is higher, in one more run of the pipeline
        # (a loss that calls back has none: what a callback computes cannot be differentiated).
        scale = problem.term_scale()
        level = np.asarray(state.cal.level)
        if np.any(np.maximum(level, np.asarray(scale, level.dtype) / np.sqrt(3.0)) != level):
            first = evals + int(state.resolve_evals) + int(state.confirm_evals)
            side = dataclasses.replace(side, scale=scale)
            state, evals = _passes(problem, side, probes, grouping, engine_of, build, options, eps, tol, engine)
            evals += first
    return engine, state, evals


# ---------------------------------------------------------------- the composition


def run(loss_fn: Callable, grad_fn: Callable | None, params, args, options: Options, eps=None, tol=None, key=None):
    """A gradient check of any mode, on concrete or traced inputs."""
    problem = Problem(loss_fn, params, args, options.method, tol, name=options.loss_name)
    probes, grouping, extra = probe_set(problem, options, key)
    side = gradient_side(problem, grad_fn, options, probes)
    blocks = probes.kind == _probes.BLOCKS

    def build(params64, args64):
        p = Problem(loss_fn, params64, args64, options.method, tol, name=options.loss_name)
        return p, gradient_side(
            p, grad_fn, dataclasses.replace(options, autodiff=False), jax.tree_util.tree_map(np.asarray, probes), scale=True
        )

    def engine_of(p, s, n):
        return Engine(p, probes.kind, n, options.chunk_size, options.partial, key, project=s.vector if blocks else None)

    engine, state, evals = execute(problem, side, probes, grouping, engine_of, build, options, eps, tol, key)
    numeric, analytic = cast(problem, state.measured.numeric), cast(problem, state.measured.analytic)
    diagnosis = None
    if options.mode == FULL:
        hint, param = _diagnose.diagnose(
            problem.xp, problem.lay, problem.theta_x, numeric, analytic, state.decision.groups.failed
        )
        diagnosis = Diagnosis(hint, param)
    autodiff = None
    if options.autodiff:
        autodiff = _autodiff(problem.xp, side.vector, side.auto, numeric if options.mode == FULL else None, state.cal.tol)
    cls = {FULL: options.result, SAMPLED: SampledCheck, DIRECTIONS: DirectionCheck}[options.mode]
    extra["host_notes"] = tuple(problem.host_notes)
    return result(
        cls, problem, engine, state, grouping, problem.lay, evals, side.host_grad, diagnosis=diagnosis, autodiff=autodiff, **extra
    )


def first_state(problem: Problem, grouping: Grouping, measured: Measured, cal: Calibration, options: Options) -> _resolve.State:
    """The state after the first pass (host: float64 arrays; traced: as measured)."""
    final = final_of(problem, cal, grouping.k)
    P = measured.numeric.shape[0]
    if problem.traced or not options.resolve:
        m = measured if problem.traced else host64(measured)
        if not problem.traced:  # nothing will be re-measured: a rough entry proves nothing
            m = dataclasses.replace(m, known=np.asarray(m.known) & ~np.asarray(m.rough))
        decision = decide(problem, grouping, m, cal, final)
        zeros = np.zeros(P, bool)
        return _resolve.State(m, decision, cal, final, np.zeros(grouping.k, np.int8), zeros, zeros)
    m = host64(measured)
    final = np.asarray(final)
    decision = decide(problem, grouping, m, cal, final)
    zeros = np.zeros(P, bool)
    return _resolve.State(m, decision, cal, final, np.zeros(grouping.k, np.int8), zeros, zeros.copy())


def cast(problem: Problem, x):
    return x if problem.traced else np.asarray(x).astype(problem.dtype)


def result(
    cls, problem: Problem, engine: Engine, state: _resolve.State, grouping: Grouping, layout, evals, host_grad=False, **fields
):
    """The result of any check (`cls`: GradCheck or one of its kinds) from its final state;
    `fields`: what only that kind has (diagnosis, autodiff, sampled indices…)."""
    xp = problem.xp
    fields = {"diagnosis": None, "autodiff": None, **fields}
    m, cal, dec = grouping.measured(state.measured), state.cal, state.decision
    dtype = problem.dtype
    c = (
        (lambda x: x)
        if problem.traced
        else (lambda x: np.asarray(x).astype(dtype) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x))
    )
    groups = jax.tree_util.tree_map(c, dec.groups)
    total = evals + state.resolve_evals + state.confirm_evals
    noise = Noise(
        bound=c(m.bound),
        kink=m.kink,
        known=m.known,
        doubled=m.doubled,
        rough=m.rough,
        level=xp.asarray(xp.max(cal.level) if xp.ndim(cal.level) else cal.level),
        rel_level=xp.asarray(cal.rel_level),
        center=xp.asarray(xp.max(xp.abs(xp.real(cal.center))) if xp.ndim(cal.center) else xp.real(cal.center)),
        spread=xp.asarray(cal.spread),
        deterministic=xp.asarray(cal.deterministic),
        same_trace=xp.asarray(cal.same_trace),
    )
    run_ = Run(
        paths=xp.asarray(path_codes(layout, engine.paths), np.int8),
        how=xp.asarray(state.how, np.int8),
        recheck=xp.asarray(state.recheck, np.int8),
        precision=xp.asarray(cal.precision, np.int8),
        resolve_evals=xp.asarray(state.resolve_evals, np.int32),
        confirm_evals=xp.asarray(state.confirm_evals, np.int32),
        host_grad=xp.asarray(host_grad),
    )
    return cls(
        passed=xp.asarray(dec.passed),
        failed=xp.asarray(dec.failed),
        rel_error=c(dec.rel_error),
        tol=xp.asarray(cal.tol, dtype),
        eps=xp.asarray(cal.eps, dtype),
        num_evals=xp.asarray(total, np.int32),
        numeric_flat=c(m.numeric),
        analytic_flat=c(m.analytic),
        groups=groups,
        noise=noise,
        run=run_,
        layout=layout,
        method=problem.method,
        **fields,
    )


def _autodiff(xp, analytic, auto, numeric, tol) -> Autodiff:
    norm = lambda x: xp.sqrt(xp.sum(x * x))  # noqa: E731
    man_auto = _verdict.rel(xp, norm(analytic - auto), norm(analytic) + norm(auto))
    if numeric is None:
        auto_num = xp.asarray(np.nan, analytic.dtype)
    else:
        auto_num = _verdict.rel(xp, norm(auto - numeric), norm(auto) + norm(numeric))
    passed = (man_auto <= tol) & ((auto_num <= tol) | xp.isnan(auto_num)) & xp.all(xp.isfinite(auto))
    return Autodiff(auto, man_auto, auto_num, passed)
