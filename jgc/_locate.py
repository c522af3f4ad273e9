"""`jgc.locate`: find the wrong coordinates by adaptive group testing on random directions.

A block of coordinates is tested with a few random directions supported on it (the
probes of `check_directions`); a block whose directional discrepancy exceeds the noise
is split in halves, recursively, and a block of at most 2·num coordinates is resolved
coordinate by coordinate. With k wrong coordinates among n this costs O(k·log n) loss
evaluations. The recursion is data-dependent, so it is a host-side loop over jitted
engine calls, one batched call per level; `locate` is not meant to run under jit/vmap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _engine, _probes, _stencils, _tree
from ._directions import check_count, check_key
from ._report import Coordinate
from ._typing import PyTree

_UNDER_JIT = (
    "locate is host-side: its recursion depends on the values it measures, so it runs a Python loop "
    "of jitted calls and cannot be traced by jax.jit or jax.vmap; received traced params or args. "
    "Call it on concrete arrays (for a batch, loop over the failing items of a batched check)."
)


@dataclasses.dataclass(frozen=True)
class Location:
    """What `jgc.locate` found (host-side values, not a pytree).

    Attributes:
      wrong: the wrong coordinates, as `jgc.Coordinate(None, path, index, numeric, analytic)`,
        largest |numeric − analytic| first.
      num_evals: loss evaluations spent.
      levels: rounds of probes (batched engine calls) it took.
      complete: False when more than `max_wrong` blocks failed at some level and only the
        `max_wrong` worst were followed (the error is spread over many coordinates: run
        `check_grad` on the failing leaf instead).
    """

    wrong: tuple[Coordinate, ...]
    num_evals: int
    levels: int
    complete: bool

    def __str__(self) -> str:
        head = f"jgc locate: {len(self.wrong)} wrong coordinate(s) in {self.num_evals:,} loss evaluations, {self.levels} levels"
        if not self.complete:
            head += " (incomplete: too many failing blocks, followed the worst)"
        rows = [f"  {c.path}{list(c.index)}: numeric {c.numeric:.6e}, analytic {c.analytic:.6e}" for c in self.wrong]
        return "\n".join([head, *rows])


@dataclasses.dataclass(frozen=True)
class _Gradient:
    """Jitted: θ and the analytic gradient, flat."""

    loss_fn: Callable
    grad_fn: Callable | None

    def __call__(self, params, args):
        lay = _tree.layout(params)
        _check._check_loss_output(jax.eval_shape(lambda: self.loss_fn(params, *args)))
        theta = _tree.ravel(lay, params)
        return theta, _check._analytic_flat(self, lay, params, args, theta)


@dataclasses.dataclass(frozen=True)
class _Level:
    """Jitted: one level's probes, in one batched engine call."""

    loss_fn: Callable
    method: str
    chunk_size: int | None
    num_probes: int

    def __call__(self, params, args, gradient, starts, lens, key, eps):
        lay = _tree.layout(params)
        stencil = _stencils.get(self.method)
        theta = _tree.ravel(lay, params)
        probe = _probes.block_directions(theta, jnp.asarray(eps, theta.dtype), starts, lens, key)
        loss = _check._loss_of_theta(self.loss_fn, lay, params, args)
        chunk = self.chunk_size or _engine.default_chunk_size(lay.n, self.num_probes, stencil)
        numeric, _, num_evals = _engine.directional_derivatives(loss, theta, probe, self.num_probes, stencil, chunk)

        def analytic(i):
            d = probe(i)[0]
            return jnp.vdot(gradient, d), d[jnp.asarray(starts)[i]]

        analytic, first = jax.lax.map(analytic, jnp.arange(self.num_probes), batch_size=chunk)
        return numeric, analytic, first, jnp.asarray(num_evals)


def _fails(e, a, b, count, tol, scale):
    """The full check's leaf criterion on a block: relative error and RMS discrepancy both too large."""
    denom = np.sqrt(a) + np.sqrt(b)
    rel = np.sqrt(e) / denom if denom > 0 else 0.0
    return (rel > tol) and (np.sqrt(e / count) > tol * scale), rel


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
    `num` random directions supported on it (as in `jgc.check_directions`); a block
    whose directional relative error exceeds `tol` *and* whose RMS discrepancy exceeds
    `tol` times the gradient's RMS scale (the full check's leaf criterion) is split in
    halves, and the halves are probed in the next level. Blocks of at most 2·`num`
    coordinates are checked coordinate by coordinate, which gives the numeric value
    of each wrong coordinate. When a failing block's halves both pass, the half with
    the larger discrepancy is followed anyway (the error must be somewhere), so an
    error is not lost to an unlucky direction; false alarms end at the exact
    coordinate check. A single wrong coordinate among n costs 2·num evaluations per leaf at
    level 0, then 4·num per level (2 halves × num directions × 2, central) for
    ≈ log₂(n/2num) levels, then ≤ 4·num for the last coordinates: 288 for n = 10⁶
    in two leaves and num=4.

    The recursion depends on the values, so `locate` is a host-side loop: each level's
    probes are evaluated in one batched, jitted engine call (compiled once per
    distinct number of probes), and the result holds Python values. It is not meant
    to be called under `jax.jit` or `jax.vmap`; run it on concrete params, after a
    failed `check_directions` or sampled check.

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
    _check._validate(loss_fn, grad_fn, method, eps, tol, chunk_size)
    check_key(key)
    check_count("num", num)
    check_count("max_wrong", max_wrong)
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((params, args))):
        raise TypeError(_UNDER_JIT)
    params = _check._prepare(params)
    lay = _tree.layout(params)
    _stencils.get(method)  # validates the method name
    eps = _stencils.default_eps(lay.low_dtype, method) if eps is None else float(eps)
    tol = _stencils.default_tol(lay.low_dtype, method) if tol is None else float(tol)
    theta, gradient = _check._call(_Gradient(loss_fn, grad_fn), params, args)
    gradient_host = np.asarray(gradient)
    small = 2 * num

    # A block is (start, size, parent); blocks of one coordinate are coordinate checks.
    blocks = [(o, s, -1) for o, s in zip(lay.offsets, lay.sizes, strict=True)]
    wrong, num_evals, levels, complete, scale = [], 0, 0, True, None
    while blocks:
        starts, lens, owner = [], [], []
        for b, (start, size, _) in enumerate(blocks):
            if size <= small:  # resolve coordinate by coordinate
                starts += range(start, start + size)
                lens += [1] * size
                owner += [b] * size
            else:
                starts += [start] * num
                lens += [size] * num
                owner += [b] * num
        level = _Level(loss_fn, method, chunk_size, len(starts))
        options = dict(starts=np.asarray(starts, np.int32), lens=np.asarray(lens, np.int32), eps=eps)
        out = _check._call(level, params, args, gradient=gradient, key=jax.random.fold_in(key, levels), **options)
        dn, da, first = (np.asarray(x, np.float64) for x in out[:3])
        num_evals += int(out[3])  # as the engine counts them
        levels += 1
        owner = np.asarray(owner)
        masks = [owner == b for b in range(len(blocks))]
        stats = [(np.sum((dn[m] - da[m]) ** 2), np.sum(dn[m] ** 2), np.sum(da[m] ** 2)) for m in masks]
        if scale is None:  # level 0 probes every leaf: estimate the gradient's RMS scale
            w = [s / (s if s <= small else num) for _, s, _ in blocks]
            norm_num = np.sqrt(sum(wk * st[1] for wk, st in zip(w, stats, strict=True)))
            norm_ana = np.sqrt(sum(wk * st[2] for wk, st in zip(w, stats, strict=True)))
            scale = (norm_num + norm_ana) / np.sqrt(lay.n)
        failing, found = {}, set()  # failing block -> (rms discrepancy, relative error); blocks with a wrong coordinate
        for b, (_, size, _) in enumerate(blocks):
            if size <= small:
                for i in np.flatnonzero(owner == b):
                    bad, _ = _fails((dn[i] - da[i]) ** 2, dn[i] ** 2, da[i] ** 2, 1, tol, scale)
                    if bad:
                        path, index = lay.locate(int(starts[i]))
                        wrong.append(Coordinate(None, path, index, float(dn[i] / first[i]), float(gradient_host[starts[i]])))
                        found.add(b)
            else:
                bad, rel = _fails(*stats[b], num, tol, scale)
                if bad:
                    failing[b] = (np.sqrt(stats[b][0] / num), rel)
        # A failing parent whose halves all passed: follow the half with the larger discrepancy.
        parents = {}
        for b, (_, _, parent) in enumerate(blocks):
            if parent >= 0:
                parents.setdefault(parent, []).append(b)
        for children in parents.values():
            big = [c for c in children if blocks[c][1] > small]
            if big and not any(c in failing or c in found for c in children):
                c = max(big, key=lambda c: stats[c][0])
                failing[c] = (np.sqrt(stats[c][0] / num), 0.0)
        if len(failing) > max_wrong:
            complete = False
            failing = dict(sorted(failing.items(), key=lambda kv: -kv[1][0])[:max_wrong])
        halves = []
        for parent, b in enumerate(sorted(failing)):
            start, size, _ = blocks[b]
            halves += [(start, size // 2, parent), (start + size // 2, size - size // 2, parent)]
        blocks = halves
    wrong.sort(key=lambda c: -abs(c.numeric - c.analytic))
    return Location(tuple(wrong), num_evals, levels, complete)
