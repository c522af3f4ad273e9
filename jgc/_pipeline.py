"""The gradient-check pipeline: setup → probes → engine → verdict → result, for any probe set.

A *mode* is a probe set on θ and how its entries group into leaves: every coordinate
(`FULL`), a stratified sample of coordinates (`SAMPLED`), random directions on each leaf
(`DIRECTIONS`). `run` does the rest the same way for all of them, on the host (compiled
programs, data-dependent stages, resolution of what stays unresolved) or inside a trace
(the caller's `jit`/`vmap`: one program, static shapes). `traced` wraps `run` in one `jit`
per check so a `vmap` over it compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _diagnose, _engine, _jit, _probes, _resolve, _tree, _validate, _verdict
from ._measure import Session
from ._problem import Problem
from ._result import Autodiff, Diagnosis, DirectionCheck, GradCheck, Noise, SampledCheck

FULL, SAMPLED, DIRECTIONS = "full", "sampled", "directions"


@dataclasses.dataclass(frozen=True)
class Options:
    """Static options of a gradient check (hashable)."""

    method: str = "central"
    chunk_size: int | None = None
    autodiff: bool = False
    mode: str = FULL
    coords: int = 0  # SAMPLED: how many coordinates
    num: int = 0  # DIRECTIONS: directions per leaf
    resolve: bool = True
    partial: bool = True  # partial evaluation where the cost model says it pays (jgc/_partial.py)
    result: type = GradCheck
    loss_name: str = "loss_fn"
    grad_name: str = "grad_fn"


def allocate(sizes: tuple[int, ...], k: int) -> tuple[int, ...]:
    """How many of k coordinates each leaf gets: equal shares, capped by the leaf's size,
    the surplus of small leaves shared among the others (water filling). Every leaf of
    nonzero size gets at least one; the total is max(min(k, n), number of such leaves).

    Examples:
      >>> allocate((1000, 10, 3), 30)
      (17, 10, 3)
    """
    counts = [0] * len(sizes)
    live = [i for i in range(len(sizes)) if sizes[i]]
    left, open_ = max(k, len(live)), sorted(live, key=lambda i: sizes[i])
    while open_:
        share = left // len(open_)
        i = open_[0]
        if sizes[i] <= share:  # the smallest leaf is fully checked
            counts[i] = sizes[i]
            left -= sizes[i]
            open_.pop(0)
            continue
        extra = left - share * len(open_)
        for r, i in enumerate(open_):  # the largest leaves take the remainder
            counts[i] = share + (r >= len(open_) - extra)
        break
    return tuple(max(1, c) if s else 0 for c, s in zip(counts, sizes, strict=True))


def draw(xp, key, *, lay: _tree.Layout, counts: tuple[int, ...]):
    """Flat θ indices: counts[k] distinct coordinates of leaf k, drawn uniformly, leaf after leaf."""
    parts = []
    for k, (offset, size, m) in enumerate(zip(lay.offsets, lay.sizes, counts, strict=True)):
        if m == size:
            parts.append(xp.arange(offset, offset + size, dtype=np.int32))
        else:
            pick = jax.random.choice(jax.random.fold_in(key, k), size, (m,), replace=False)
            parts.append((offset + xp.sort(xp.asarray(pick))).astype(np.int32))
    return xp.concatenate(parts)


def _probe_set(problem: Problem, options: Options, key):
    """(probes with base 0, group of each entry, entries per group, result extras)."""
    lay, xp = problem.lay, problem.xp
    if options.mode == FULL:
        return _probes.Probes(xp.arange(lay.n, dtype=np.int32), xp.zeros(lay.n, problem.dtype)), lay.segments, {}
    if options.mode == SAMPLED:
        counts = allocate(lay.sizes, options.coords)
        if problem.traced:
            index = draw(jnp, key, lay=lay, counts=counts)
        else:  # compiled once per layout, not op by op
            draw_program = _jit.program(("draw", lay, counts), functools.partial(draw, jnp, lay=lay, counts=counts))
            index = _engine.to_host(draw_program(key))
        seg = np.repeat(np.arange(lay.k, dtype=np.int32), counts)
        return _probes.Probes(index, xp.zeros(index.shape, problem.dtype)), seg, dict(index=index, sampled=sum(counts))
    num = options.num
    probes = _probes.leaf_blocks(lay.offsets, lay.sizes, num, 0.0)
    if problem.traced:
        probes = jax.tree_util.tree_map(lambda x: xp.asarray(x), probes)
    seg = np.repeat(np.arange(lay.k, dtype=np.int32), num)
    return probes, seg, dict(num_directions=num)


def run(loss_fn: Callable, grad_fn: Callable | None, params, args, options: Options, eps=None, tol=None, key=None):
    """A gradient check of any mode, on concrete or traced inputs."""
    problem = Problem(loss_fn, params, args, options.method, tol, name=options.loss_name)
    xp, lay = problem.xp, problem.lay
    analytic, j_again, auto = problem.gradient(grad_fn, options.autodiff, options.grad_name)
    probes, seg, extra = _probe_set(problem, options, key)
    blocks = probes.kind == _probes.BLOCKS
    session = Session(
        problem,
        probes.kind,
        len(probes),
        eps=eps,
        key=key,
        project=analytic if blocks else None,
        chunk_size=options.chunk_size,
        partial=options.partial,
        resolve=options.resolve,
    )
    assert analytic is not None
    wanted = None if blocks else analytic[probes.start]
    measured, probes = session.first(probes, wanted, top_k=_top_k(len(probes), session))
    # J(θ) from the probe program and from a second trace: two programs may round differently
    # (other fusion, other summation order), by a few times the loss's rounding level at most
    u = float(np.finfo(problem.dtype).eps)
    j0 = xp.real(session.center)
    close = xp.abs(j0 - j_again) <= 8 * session.level + 4 * u * xp.abs(j0)
    deterministic = (j0 == j_again) | close | (xp.isnan(j0) & xp.isnan(j_again))
    # one-sided differences mean nothing when J(θ) is not reproducible
    measured = dataclasses.replace(measured, kink=measured.kink & deterministic)

    def decide(m):
        return _verdict.decide(
            xp,
            m.numeric,
            m.analytic,
            m.bound,
            m.kink,
            m.known,
            seg,
            lay.k,
            lay.sizes,
            session.tol,
            session.floor,
            deterministic,
            session.final,
            session.group_floor,
        )

    # a leaf the loss does not read (a constant loss) has derivative exactly 0: no error to bound
    exact = problem.exact_zeros(probes.start, measured.numeric)
    if exact is not None:
        measured = dataclasses.replace(measured, bound=xp.where(exact, 0, measured.bound), known=measured.known | exact)
    decision = decide(measured)
    if options.resolve and not problem.traced:
        measured, decision = _resolve.resolve(session, probes, measured, decision, decide, seg)
    diagnosis = None
    if options.mode == FULL:
        theta = problem.theta_x
        hint, param = _diagnose.diagnose(xp, lay, theta, measured.numeric, measured.analytic, decision.groups.failed)
        diagnosis = Diagnosis(hint, param)
    autodiff = None
    if options.autodiff:
        autodiff = _autodiff(xp, analytic, auto, measured.numeric if options.mode == FULL else None, session.tol)
    noise = Noise(
        measured.bound,
        measured.kink,
        measured.known,
        measured.doubled,
        xp.asarray(session.level),
        xp.asarray(session.rel_level),
        xp.stack([j0, xp.asarray(j_again, j0.dtype)]),
        xp.asarray(deterministic),
    )
    cls = {FULL: options.result, SAMPLED: SampledCheck, DIRECTIONS: DirectionCheck}[options.mode]
    # + 1: J(θ) from the second trace (the determinism check)
    return result(
        cls,
        problem,
        session,
        decision,
        measured.numeric,
        measured.analytic,
        noise,
        lay,
        options.method,
        1,
        diagnosis=diagnosis,
        autodiff=autodiff,
        **extra,
    )


def result(
    cls,
    problem: Problem,
    session: Session,
    decision,
    numeric,
    analytic,
    noise: Noise,
    layout,
    method: str,
    more_evals: int = 0,
    **fields,
):
    """The result of any check (`cls`: GradCheck or one of its kinds) from its session and verdict;
    `fields`: what only that kind has (diagnosis, autodiff, sampled indices…)."""
    xp = problem.xp
    fields = {"diagnosis": None, "autodiff": None, **fields}
    return cls(
        passed=decision.passed,
        failed=decision.failed,
        rel_error=decision.rel_error,
        tol=xp.asarray(session.tol),
        eps=xp.asarray(session.eps),
        num_evals=xp.asarray(session.evals + more_evals, np.int32),
        resolve_evals=session.resolve_evals,
        numeric_flat=numeric,
        analytic_flat=analytic,
        groups=decision.groups,
        noise=noise,
        layout=layout,
        method=method,
        notes=tuple(problem.notes + session.notes),
        leaf_eval=session.leaf_eval,
        **fields,
    )


def _top_k(num_probes: int, session: Session) -> int:
    """Under a trace, how many probes may get the doubled step (a static number)."""
    return min(num_probes, max(session.runner.plan.chunk, num_probes // 4))


def _autodiff(xp, analytic, auto, numeric, tol) -> Autodiff:
    norm = lambda x: xp.sqrt(xp.sum(x * x))  # noqa: E731
    man_auto = _verdict.rel(xp, norm(analytic - auto), norm(analytic) + norm(auto))
    if numeric is None:
        auto_num = xp.asarray(np.nan, analytic.dtype)
    else:
        auto_num = _verdict.rel(xp, norm(auto - numeric), norm(auto) + norm(numeric))
    passed = (man_auto <= tol) & ((auto_num <= tol) | xp.isnan(auto_num)) & xp.all(xp.isfinite(auto))
    return Autodiff(auto, man_auto, auto_num, passed)


@dataclasses.dataclass(frozen=True)
class Traced:
    """A check called on traced inputs: `body` inside one jit (inlined under the caller's jit;
    under `vmap` alone, one compiled program instead of op-by-op execution)."""

    body: Callable  # a module-level function: body(*fns, params, args, options, eps, tol, key)
    fns: tuple  # Refs of the user's functions (None where not given)
    static: tuple
    options: object

    def __call__(self, dynamic, eps, tol, key):
        params, args = _jit.combine(dynamic, self.static)
        fns = [None if f is None else f() for f in self.fns]
        return self.body(*fns, params, args, self.options, eps, tol, key)


def check(body: Callable, fns: tuple, params, args, options, eps=None, tol=None, key=None):
    """`body(*fns, params, args, options, eps, tol, key)` on the host, or inside one jit when
    any input is traced."""
    dynamic, static = _jit.partition((params, args))
    if _jit.is_traced((dynamic, eps, tol, key)):
        _validate.step(eps, _tree.layout(params), None, options.method)  # eps is concrete here only
        spec = Traced(body, tuple(None if f is None else _jit.Ref(f) for f in fns), static, options)
        return _jit.program(("traced", spec), spec)(dynamic, eps, tol, key)
    return body(*fns, params, args, options, eps, tol, key)
