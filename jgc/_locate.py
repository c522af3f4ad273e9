"""`jgc.locate`: find the wrong coordinates by adaptive group testing on random directions.

A block of coordinates is tested with a few random directions supported on it (the
probes of `check_directions`). Each level is one pass of the pipeline with each block as a
group — measure, decide, and settle: blocks the differences cannot resolve are re-measured
(in float64 for a float32 check) and failures are confirmed at a second step, exactly as in
`check_grad`. A block that fails is split in halves, recursively, and a block of at most
2·num coordinates is resolved coordinate by coordinate. A block that stays unresolved cannot
be cleared: it is split like a failing one, and a coordinate that stays unresolved makes
the location incomplete (it is listed), so `complete` is never claimed with a bug left
where the differences could not look. With k wrong coordinates among n this costs
O(k·log n) loss evaluations. The recursion is data-dependent, so it is a host-side loop over
calls of one compiled probe program; `locate` is not meant to run under jit/vmap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from . import _host, _pipeline, _probes, _resolve, _validate, _verdict
from ._engine import Engine
from ._measure import measure
from ._problem import Problem
from ._report import Coordinate
from ._typing import PyTree, Tracer

_UNDER_JIT = (
    "locate is host-side: its recursion depends on the values it measures, so it runs a Python loop "
    "of compiled calls and cannot be traced by jax.jit or jax.vmap; received traced params or args. "
    "Call it on concrete arrays (for a batch, loop over the failing items of a batched check)."
)

_LEVEL = 1 << 20  # probe numbers of level l start at l·_LEVEL (fresh directions per level)


@dataclasses.dataclass(frozen=True)
class Location:
    """What `jgc.locate` found (host-side values, not a pytree).

    Attributes:
      wrong: the wrong coordinates, as `jgc.Coordinate(None, path, index, numeric, analytic)`,
        largest |numeric − analytic| first.
      num_evals: loss evaluations spent.
      levels: rounds of probes (batched engine calls) it took.
      complete: False when more than `max_wrong` blocks failed or stayed unresolved at some
        level and only the `max_wrong` worst were followed (the error is spread over many
        coordinates: run `check_grad` on the failing leaf instead), or when some coordinates
        stayed unresolved (`unresolved`).
      unresolved: coordinates the finite differences could not resolve (path, index), even
        after re-measurement.
      resolve_evals: of num_evals, those spent re-measuring blocks the differences could not
        resolve and confirming failing ones at a second step.
    """

    wrong: tuple[Coordinate, ...]
    num_evals: int
    levels: int
    complete: bool
    unresolved: tuple[tuple[str, tuple[int, ...]], ...] = ()
    resolve_evals: int = 0

    def __str__(self) -> str:
        head = f"jgc locate: {len(self.wrong)} wrong coordinate(s) in {self.num_evals:,} loss evaluations, {self.levels} levels"
        if not self.complete:
            head += (
                " (incomplete: "
                + (
                    f"{len(self.unresolved)} coordinate(s) the differences cannot resolve"
                    if self.unresolved
                    else "too many failing blocks, followed the worst"
                )
                + ")"
            )
        rows = [f"  {c.path}{list(c.index)}: numeric {c.numeric:.6e}, analytic {c.analytic:.6e}" for c in self.wrong]
        rows += [f"  unresolved {path}{list(index)}" for path, index in self.unresolved[:20]]
        return "\n".join([head, *rows])


def locate(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    params: PyTree,
    *args,
    key: jax.Array,
    num: int = 4,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    max_wrong: int = 16,
    chunk_size: int | None = None,
) -> Location:
    """Find the wrong coordinates of a gradient in O(k·log n) loss evaluations.

    Adaptive group testing: every checked leaf is a block; each block is probed with
    `num` random directions supported on it (as in `jgc.check_directions`) and judged by
    the one verdict of `jgc.check_grad` with the block as a group: a block whose
    directional discrepancy is beyond the noise fails and is split in halves, and the
    halves are probed in the next level. Blocks of at most 2·`num` coordinates are
    checked coordinate by coordinate, which gives the numeric value of each wrong
    coordinate. When a failing block's halves both pass, the half with the larger
    discrepancy is followed anyway (the error must be somewhere), so an error is not lost
    to an unlucky direction; false alarms end at the exact coordinate check.

    The recursion depends on the values, so `locate` is a host-side loop: each level's
    probes are evaluated by one compiled probe program (compiled once), and the result
    holds Python values. It is not meant to be called under `jax.jit` or `jax.vmap`; run
    it on concrete params, after a failed `check_directions` or sampled check.

    Args:
      loss_fn, grad_fn, params, *args: as in `jgc.check_grad`.
      key: PRNG key for the directions.
      num: directions per block per level.
      eps, tol, method, chunk_size: as in `jgc.check_directions`.
      max_wrong: follow at most this many failing blocks per level (the worst ones).

    Returns:
      A `jgc.Location`: `.wrong` (each a `jgc.Coordinate` with leaf path, index,
      numeric and analytic values), `.num_evals`, `.levels`, `.complete`.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> loss = lambda p: jnp.sum(jnp.sin(p["w"]))
      >>> grad = lambda p: {"w": jnp.cos(p["w"]).at[123].add(10.0)}  # one wrong entry
      >>> found = jgc.locate(loss, grad, {"w": jnp.linspace(0.0, 1.0, 1000)}, key=jax.random.key(0))
      >>> [(c.path, c.index) for c in found.wrong]
      [("['w']", (123,))]
    """
    _validate.options(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _validate.key(key)
    _validate.count("num", num)
    _validate.count("max_wrong", max_wrong)
    if any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves((params, args, key))):
        raise TypeError(_UNDER_JIT)
    params = _validate.prepare(params)

    def search(loss_fn, on_host):
        """The search with `loss_fn` as given, or (on_host) as a host loss in small chunks."""
        chunk = chunk_size if chunk_size is not None or not on_host else _host.HOST_CHUNK
        return _search(loss_fn, grad_fn, params, args, key, num, eps, tol, method, max_wrong, chunk)

    return _host.run(search, loss_fn, params, args, False, autograd="grad_fn=None" if grad_fn is None else "")


def _search(loss_fn, grad_fn, params, args, key, num, eps, tol, method, max_wrong, chunk_size):
    def build(params, args):
        p = Problem(loss_fn, params, args, method, tol)
        analytic, _, host, scale = p.gradient(grad_fn, scale=True)
        return p, _pipeline.Side(analytic, None, None, host, scale)

    def engine_of(p, side, n):
        return Engine(p, _probes.BLOCKS, n, chunk_size, False, key, project=side.vector)

    problem, side = build(params, args)
    lay = problem.lay
    analytic = np.asarray(side.vector)
    small = 2 * num
    theta = problem.theta_x
    engine = engine_of(problem, side, num * lay.k)  # the probe program is sized for the first level
    float64 = cal = None

    # A block is (start, size, parent); blocks of one coordinate are coordinate checks.
    blocks = [(o, s, -1, 0) for o, s in zip(lay.offsets, lay.sizes, strict=True) if s]  # (start, size, parent, parent failed)
    wrong, unresolved, levels, complete, evals, redone = [], [], 0, True, 0, 0
    while blocks:
        # probes, and the verdict's groups: one per block, one per coordinate of a small block
        starts, lens, group, sizes = [], [], [], []
        for start, size, _, _ in blocks:
            if size <= small:
                starts += range(start, start + size)
                lens += [1] * size
                group += range(len(sizes), len(sizes) + size)
                sizes += [1] * size
            else:
                starts += [start] * num
                lens += [size] * num
                group += [len(sizes)] * num
                sizes.append(size)
        ident = levels * _LEVEL + np.arange(len(starts))
        probes = _probes.blocks(starts, lens, 0.0, ident)
        grouping = _pipeline.Grouping(np.asarray(group, np.int32), len(sizes), tuple(sizes))
        if cal is None:  # with the noise probe (which sets eps and tol)
            recheck = lay.low_dtype == np.float32
            cal, m, probes, e = _pipeline.calibrated(problem, engine, side, probes, eps, tol, recheck)
            float64 = _pipeline.float64_for(problem, side, cal, build, engine_of, engine)
        else:
            probes = _probes.blocks(starts, lens, float(cal.eps), ident)
            m, e = measure(engine, cal, probes)
        evals += int(e)
        opts = _pipeline.Options(method, chunk_size)
        state = _pipeline.first_state(problem, grouping, m, cal, opts)
        state = _resolve.settle(_pipeline.passes(problem, engine, side, cal, grouping, probes, float64), state)
        evals += state.resolve_evals + state.confirm_evals
        redone += state.resolve_evals + state.confirm_evals
        m, dec = state.measured, state.decision
        failed = np.asarray(dec.groups.failed)
        open_ = _resolve.open_groups(dec)
        seg = grouping.seg
        disc = _verdict.segment_sum(np, (np.asarray(m.numeric) - np.asarray(m.analytic)) ** 2, seg, grouping.k)
        levels += 1
        follow, found = {}, set()  # block to split -> priority; blocks with a wrong coordinate
        g = 0
        for b, (start, size, _, _) in enumerate(blocks):
            if size <= small:
                for j in range(size):
                    i = start + j
                    row = int(np.flatnonzero(np.asarray(starts) == i)[0])
                    if failed[g + j]:
                        h = float(m.step[row])
                        t = np.float64(theta[i]) if state.in64[row] else theta[i]  # the precision it was measured in
                        d = float(((t + np.asarray(h, t.dtype)) - t) / h) if h else 1.0
                        path, index = lay.locate(i)
                        wrong.append(Coordinate(None, path, index, float(m.numeric[row]) / d, float(analytic[i])))
                        found.add(b)
                    elif open_[g + j]:
                        unresolved.append(lay.locate(i))
                g += size
            else:
                if failed[g]:
                    follow[b] = (2, float(disc[g]))
                elif open_[g]:  # not cleared: it may hide a wrong coordinate
                    follow[b] = (1, float(disc[g]))
                g += 1
        # A failing parent whose halves all passed: follow the half with the larger discrepancy.
        parents: dict[int, list[int]] = {}
        for b, (_, _, parent, parent_failed) in enumerate(blocks):
            if parent >= 0 and parent_failed:
                parents.setdefault(parent, []).append(b)
        group_of = {}
        g = 0
        for b, (_, size, _, _) in enumerate(blocks):
            group_of[b] = g
            g += size if size <= small else 1
        for children in parents.values():
            big = [c for c in children if blocks[c][1] > small]
            if big and not any(c in follow or c in found for c in children):
                c = max(big, key=lambda c: disc[group_of[c]])
                follow[c] = (2, float(disc[group_of[c]]))
        if len(follow) > max_wrong:
            complete = False
            follow = dict(sorted(follow.items(), key=lambda kv: kv[1], reverse=True)[:max_wrong])
        halves = []
        for parent, b in enumerate(sorted(follow)):
            start, size, _, _ = blocks[b]
            failing = follow[b][0] == 2
            halves += [(start, size // 2, parent, failing), (start + size // 2, size - size // 2, parent, failing)]
        blocks = halves
    wrong.sort(key=lambda c: -abs(c.numeric - c.analytic))
    return Location(tuple(wrong), evals, levels, complete and not unresolved, tuple(unresolved), redone)
