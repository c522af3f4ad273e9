"""Host-side formatting of a result: the text report and worst(k). Pure, never traced."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from . import _diagnose, _host, _resolve, _stencils
from ._typing import Tracer


class Coordinate(NamedTuple):
    """One coordinate of a checked gradient, as returned by `GradCheck.worst`."""

    seed: int | None
    path: str
    index: tuple[int, ...]  # pyright: ignore[reportIncompatibleMethodOverride]  (a field, as NamedTuple allows)
    numeric: float
    analytic: float


def is_traced(res) -> bool:
    return isinstance(res.rel_error, Tracer)


def batch_shape(res) -> tuple[int, ...]:
    return np.shape(res.rel_error)


def select(res, seed: int):
    """The `seed`-th check of a batched result (batch axes flattened)."""
    nb = len(batch_shape(res))
    return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[nb:])[seed], res)


def order(rel: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """Indices, failing first, then by decreasing error, NaN counted as the worst."""
    key = np.where(np.isnan(rel), np.inf, rel)
    return np.lexsort((-key, passed))


def _status(res) -> str:
    return "passed" if bool(res.passed) else "FAILED" if bool(res.failed) else "INCONCLUSIVE"


def summary_line(res) -> str:
    if is_traced(res):
        return "traced; call .report() on the value returned from jit/vmap"
    batch = batch_shape(res)
    if batch:
        passed = np.asarray(res.passed).reshape(-1)
        failed = np.asarray(res.failed).reshape(-1)
        return (
            f"{int(failed.sum())} of {passed.size} checks failed, {int((~passed & ~failed).sum())} inconclusive, "
            f"worst rel_error {largest(np.asarray(res.rel_error)):.2e}"
        )
    return verdict_line(res)


def largest(x) -> float:
    """The largest value of x, NaN ignored (NaN when every value is NaN or there is none), without
    NumPy's all-NaN warning (a check whose loss is NaN at every probe still gets its report)."""
    x = np.asarray(x, float).ravel()
    x = x[~np.isnan(x)]
    return float(x.max()) if x.size else float("nan")


def smallest(x) -> float:
    """The smallest value of x, as `largest`."""
    return -largest(-np.asarray(x, float))


def _paths(res, mask) -> str:
    lay = res.layout
    paths = [lay.name(i) for k, i in enumerate(lay.checked_index) if mask[k]]
    return ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")


def verdict_line(res) -> str:
    g = res.groups
    tol = float(res.tol)
    failed, passed = np.asarray(g.failed, bool), np.asarray(g.passed, bool)
    nonfinite = _nonfinite_leaves(res)
    if bool(res.passed):
        what = f"every leaf agrees within tol {tol:.1e} (largest possible error {largest(np.asarray(g.upper, float)):.1e})"
    elif bool(res.failed):
        parts = []
        differ = failed & ~nonfinite
        if differ.any():
            proven = np.asarray(g.lower, float)[differ]
            parts.append(f"{_paths(res, differ)} differ beyond the noise (proven error {largest(proven):.1e})")
        if nonfinite.any():
            parts.append(f"non-finite values in {_paths(res, nonfinite)}")
        if not bool(np.asarray(res.noise.deterministic)):
            parts.append("the loss is not deterministic")
        what = "; ".join(parts)
    else:
        open_ = ~passed & ~failed
        upper = np.asarray(g.upper, float)[open_]
        what = f"the finite differences cannot resolve tol {tol:.1e} on {_paths(res, open_)} (possible error up to {largest(upper):.1e}); nothing is proven wrong"
    return (
        f"{_status(res)}: {what}; rel_error {float(res.rel_error):.2e} "
        f"({res.method}, eps {float(res.eps):.1e}, {np.asarray(res.eps).dtype.name}, "
        f"{_scope(res)}, {int(res.num_evals):,} {res.evaluates} evaluations)"
    )


def _nonfinite_leaves(res) -> np.ndarray:
    """Leaves with a non-finite analytic value (a failure; a non-finite numeric one is unresolved)."""
    ana = np.asarray(res.analytic_flat)
    bad = ~np.isfinite(ana)
    seg = _entry_groups(res)
    out = np.zeros(res.layout.k, bool)
    np.logical_or.at(out, seg[bad], True)
    return out


def _entry_groups(res) -> np.ndarray:
    """The group (checked leaf) of each flat entry."""
    lay = res.layout
    e = np.shape(res.numeric_flat)[-1]
    if hasattr(res, "num_directions") and res.num_directions:
        return np.repeat(np.arange(lay.k), res.num_directions)
    if getattr(res, "index", None) is not None:
        return lay.segments[np.asarray(res.index)]
    seg = lay.segments
    return seg if seg.size == e else np.zeros(e, int)


def _autodiff_lines(res) -> list[str]:
    """The three distances of `check_grad(..., autodiff=True)` and what they point at."""
    if res.autodiff is None:
        return []
    tol = float(res.tol)
    ad = res.autodiff
    d = {"manual vs numeric": float(res.rel_error), "manual vs autodiff": float(ad.rel_error)}
    d["autodiff vs numeric"] = float(ad.rel_error_numeric)
    bad = {k: not (v <= tol) for k, v in d.items()}
    cells = ", ".join(f"{k} {v:.2e}{' ✗' if bad[k] else ''}" for k, v in d.items())
    lines = [f"  autodiff cross-check: {cells}"]
    mn, ma, an = bad.values()
    if an and not mn:
        diagnosis = (
            "jax.grad(loss_fn) disagrees with finite differences while grad_fn agrees: a wrong "
            "custom_vjp/custom_jvp rule, or code jax.grad cannot differentiate (stop_gradient, "
            "integer casts, non-smooth ops) inside loss_fn"
        )
    elif mn and not ma:
        diagnosis = (
            "grad_fn and jax.grad agree but finite differences do not: a custom_vjp/custom_jvp rule both "
            "rely on is wrong (grad_fn=None checks jax.grad itself), or loss_fn is not smooth at this point"
        )
    elif mn and not an:
        diagnosis = "jax.grad confirms finite differences: grad_fn is wrong"
    elif mn:
        diagnosis = "all three disagree: check grad_fn and any custom_vjp/custom_jvp rule in loss_fn"
    else:
        diagnosis = ""
    if diagnosis:
        lay = res.layout
        auto, num = np.asarray(ad.gradient, float), np.asarray(res.numeric_flat, float)
        errs = [
            (_distance(auto[o : o + s], num[o : o + s]), lay.checked_paths[k])
            for k, (o, s) in enumerate(zip(lay.offsets, lay.sizes))
        ]
        worst_err, worst_path = max(errs)
        where = f" (autodiff vs numeric worst leaf {worst_path}: {worst_err:.2e})" if an else ""
        lines.append(f"  → {diagnosis}{where}")
    return lines


def _distance(a, b) -> float:
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom else 0.0


def _scope(res) -> str:
    """What was probed: every coordinate, a sample of them, or random directions per leaf."""
    n = res.layout.n
    if getattr(res, "num_directions", 0):
        return f"{res.num_directions} directions per leaf over {n:,} coordinates"
    if getattr(res, "sampled", 0):
        return f"{res.sampled:,} of {n:,} coordinates sampled"
    return f"{n:,} coordinates"


_NONDETERMINISTIC = (
    "the loss is not deterministic: the same compiled program evaluated at the same points twice gave values "
    "differing by up to {spread:.3g} (J(θ) = {center:.6g}), so finite differences measure noise. Draw randomness "
    "(dropout masks, sampling) from a PRNG key passed in *args, e.g. loss_fn(params, x, key) with "
    "jax.random.bernoulli(key, ...), never from state that changes between calls (NumPy's random functions, "
    "a counter)."
)

_RETRACED = (
    "the loss is not deterministic: traced twice, it gave two different programs (it draws random numbers "
    "or reads changing state when it is traced, e.g. NumPy's global RNG), so every compiled program — the "
    "finite differences, grad_fn's — sees another loss. Draw randomness (dropout masks, sampling) from a PRNG "
    "key passed in *args, e.g. loss_fn(params, x, key) with jax.random.bernoulli(key, ...)."
)

_INCONCLUSIVE = "inconclusive: {why} To resolve it: {remedy}"

_RECHECK = {
    _resolve.NOT_FLOAT64: "loss_fn does not return float64 for float64 inputs",
    _resolve.OTHER_FUNCTION: (
        "in float64 the loss evaluates another function (J(θ) or the gradient differ from their float32 values "
        "beyond float32's rounding: randomness or constants drawn by dtype, e.g. a dropout mask drawn with the "
        "params' dtype)"
    ),
    _resolve.NOT_TRACEABLE: "loss_fn or grad_fn cannot be traced with float64 inputs",
    _resolve.LOWER_PRECISION: "the loss computes in a lower precision inside, which float64 parameters do not make more precise",
}


def _flagged(res, flag) -> np.ndarray:
    return (np.asarray(res.run.how).astype(int) & flag) > 0


def notes(res) -> list[str]:
    """What the check did beyond the plain recipe, from its codes (one unbatched result)."""
    out = []
    run, g = res.run, res.groups
    out += list(getattr(res, "host_notes", ()))
    if getattr(res, "host_cost", None) is not None:
        out.append(_host.cost_note(res.host_cost))
    precision = int(np.asarray(run.precision))
    theta = _stencils.PRECISIONS.index(res.layout.low_dtype.name) if res.layout.low_dtype.name in _stencils.PRECISIONS else 0
    if precision > theta:
        name = _stencils.PRECISIONS[precision]
        out.append(
            f"the loss rounds like {name} (relative rounding level {float(np.asarray(res.noise.rel_level)):.1e}): "
            f"{name} steps and tolerance"
        )
    recheck = int(np.asarray(run.recheck))
    rechecked = _flagged(res, _resolve.FLOAT64)
    if recheck == _resolve.RAN and rechecked.any():
        out.append(f"float64 re-check of {_paths(res, rechecked)}")
    elif recheck in _RECHECK:
        out.append(f"no float64 re-check: {_RECHECK[recheck]}; tol {float(res.tol):.0e}")
    steps = _flagged(res, _resolve.STEPS)
    if steps.any():
        out.append(f"unresolved entries of {_paths(res, steps)} re-measured with adapted steps")
    confirmed = _flagged(res, _resolve.CONFIRMED) & np.asarray(g.failed, bool)
    if confirmed.any():
        out.append(f"the failure of {_paths(res, confirmed)} was confirmed at a second step")
    withdrawn = _flagged(res, _resolve.WITHDRAWN) & ~np.asarray(g.failed, bool)
    if withdrawn.any():
        out.append(
            f"the discrepancy of {_paths(res, withdrawn)} at the first step did not persist at a second step "
            "(truncation or a kink within the stencil): not a failure"
        )
    below = (np.asarray(g.lower, float) > 0) & ~np.asarray(g.failed, bool)
    if below.any():
        out.append(
            f"{_paths(res, below)}: a discrepancy of up to {largest(np.asarray(g.lower, float)[below]):.1e} is proven, "
            f"below tol {float(res.tol):.1e}: not a failure"
        )
    rough = np.asarray(res.noise.rough, bool) & ~np.asarray(res.noise.known, bool)
    if rough.any():
        out.append(
            f"{int(rough.sum())} entries may straddle kinks (their one-sided derivatives disagree): under jit/vmap "
            "they cannot be re-measured, so they prove nothing"
        )
    evals = int(np.asarray(run.resolve_evals)) + int(np.asarray(run.confirm_evals))
    if evals:
        out.append(
            f"re-measurement cost {int(np.asarray(run.resolve_evals)):,} loss evaluations (unresolved leaves) and "
            f"{int(np.asarray(run.confirm_evals)):,} (confirming failures), included in the total"
        )
    return out


def _extra_lines(res) -> list[str]:
    """Lines after the verdict: non-determinism, what was unresolved and why, kinks, notes."""
    lines = []
    noise = res.noise
    if not bool(np.asarray(noise.same_trace)):
        lines.append(_RETRACED)
    elif not bool(np.asarray(noise.deterministic)):
        lines.append(_NONDETERMINISTIC.format(spread=float(np.asarray(noise.spread)), center=float(np.asarray(noise.center))))
    g = res.groups
    open_ = ~np.asarray(g.passed, bool) & ~np.asarray(g.failed, bool)
    if open_.any():
        unknown = ~np.asarray(noise.known, bool)
        why = (
            f"on {_paths(res, open_)} the error the finite differences may carry (noise up to "
            f"{largest(np.asarray(g.noise, float)[open_]):.1e} relative) does not let them tell an error of tol "
            f"{float(res.tol):.1e} from none."
        )
        if unknown.any():
            rough = int(np.sum(np.asarray(noise.rough, bool) & unknown))
            why += f" {int(unknown.sum())} entries have no known bound" + (
                f" ({rough} straddle kinks: their one-sided derivatives disagree at every step tried)."
                if rough
                else " (a traced check cannot re-measure them)."
            )
        recheck = int(np.asarray(res.run.recheck))
        redone = int(np.asarray(res.run.resolve_evals)) + int(np.asarray(res.run.confirm_evals))
        if res.layout.low_dtype.name == "float32" and recheck == _resolve.NOT_NEEDED and not redone:
            remedy = (
                "call the check outside jax.jit/vmap (unresolved leaves are then re-measured with better steps and "
                "in float64), or check in float64: check_grad(..., x64=True)."
            )
        elif recheck in (_resolve.NOT_FLOAT64, _resolve.NOT_TRACEABLE):
            remedy = (
                "make loss_fn and grad_fn follow their inputs' dtype (then unresolved leaves are re-checked in "
                "float64), or pass a larger tol."
            )
        elif recheck == _resolve.OTHER_FUNCTION:
            remedy = (
                "draw randomness and constants in a fixed dtype (then float64 evaluates the same function and can "
                "re-check), or pass a larger tol."
            )
        else:
            remedy = (
                "the leaf's gradient is ~0 or the loss rounds too much for this tol: pass a larger tol, or a "
                "step that suits the loss (eps=)."
            )
        lines.append(_INCONCLUSIVE.format(why=why, remedy=remedy))
    kinks = np.asarray(noise.kink, bool)
    if kinks.any():
        seg = _entry_groups(res)
        counts = np.bincount(seg[kinks], minlength=res.layout.k)
        where = ", ".join(f"{p}: {c}" for p, c in zip(res.layout.checked_paths, counts) if c)
        total = int(kinks.sum())
        lines.append(
            f"{total} kink{'s' if total > 1 else ''} ({where}): the loss is not differentiable within the "
            "stencil there and the analytic value lies between the one-sided derivatives (a valid "
            "subgradient), so they are not failures"
        )
    for note in notes(res):
        lines.append(f"note: {note}")
    return lines


def _hint_text(res, k: int, num, ana) -> str:
    if res.diagnosis is None:
        return ""
    code = int(np.asarray(res.diagnosis.hint)[k])
    if code == _diagnose.NONE:
        return ""
    param = float(np.asarray(res.diagnosis.param)[k])
    rows = None
    if code in (_diagnose.ROWS, _diagnose.COLUMNS):
        shape = res.layout.shapes[res.layout.checked_index[k]]
        d = np.asarray(num, float) - np.asarray(ana, float)
        d = d.reshape(shape[0], -1) if code == _diagnose.ROWS else d.reshape(-1, shape[-1]).T
        e = np.sum(d * d, axis=1)
        rows = [int(j) for j in np.flatnonzero(e > _diagnose.SHARE * e.sum())]
    return "hint: " + _diagnose.describe(code, param, rows)


def _fmt_index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, index)) + ("," if len(index) == 1 else "") + ")"


def _leaf_rows(res, max_leaves: int | None) -> list[str]:
    lay = res.layout
    g = res.groups
    numeric, analytic = jax.tree_util.tree_leaves(res.numeric), jax.tree_util.tree_leaves(res.analytic)
    bounds = jax.tree_util.tree_leaves(res.view(res.noise.bound))
    kinks = jax.tree_util.tree_leaves(res.view(res.noise.kink))
    rel = np.asarray(g.rel_error, float)
    lower, upper = np.asarray(g.lower, float), np.asarray(g.upper, float)
    passed, failed = np.asarray(g.passed, bool), np.asarray(g.failed, bool)
    nonfinite = _nonfinite_leaves(res)
    bad = failed | nonfinite
    open_ = ~passed & ~bad
    rank = np.where(bad, 0, np.where(open_, 1, 2))  # failed, then unresolved, then passed; worst first in each
    order = [int(k) for k in np.lexsort((-np.where(np.isnan(rel), np.inf, rel), rank))]
    shown = [k for k in order if bad[k]]
    rest = [k for k in order if not bad[k]]
    hidden = rest[max_leaves:] if max_leaves is not None else []
    shown += rest[: len(rest) - len(hidden)]
    width = max(len("leaf"), *(len(lay.name(lay.checked_index[k])) for k in shown)) if shown else 4
    label = res.index_label
    rows = [
        f"  {'leaf':<{width}}  {'shape':<12} {'rel_error':>9} {'proven':>8} {'possible':>8}  {label:<12} "
        f"{'numeric':>11} {'analytic':>11} {'± bound':>8}  note"
    ]
    for k in shown:
        i = lay.checked_index[k]
        num, ana, bnd = np.asarray(numeric[i]), np.asarray(analytic[i]), np.asarray(bounds[i])
        skipped = np.isnan(num) & np.isnan(ana) if getattr(res, "sampled", 0) else np.zeros(num.shape, bool)
        nonfin = ~(np.isfinite(num) & np.isfinite(ana)) & ~skipped
        key = np.where(skipped, -1.0, np.where(nonfin, np.inf, np.abs(num - ana)))
        w = np.unravel_index(int(np.argmax(key)), num.shape) if num.size else None
        note = [f"{int(num.size - skipped.sum()):,} of {num.size:,} sampled"] if skipped.any() else []
        if nonfin.any():
            note.append(f"{int(nonfin.sum())} non-finite")
        nk = int(np.sum(np.asarray(kinks[i])))
        if nk:
            note.append(f"{nk} kink{'s' if nk > 1 else ''}")
        if not passed[k] and not bad[k]:
            note.append("unresolved")
        hint = _hint_text(res, k, num, ana) if failed[k] else ""
        if hint:
            note.append(hint)
        mark = "✗" if bad[k] else "?" if not passed[k] else " "
        if w is None:
            cells = f"{'—':<12} {'':>11} {'':>11} {'':>8}"
            note.append("size 0")
        else:
            cells = (
                f"{_fmt_index(tuple(int(j) for j in w)):<12} {float(num[w]):>11.4e} {float(ana[w]):>11.4e} {float(bnd[w]):>8.1e}"
            )
        rows.append(
            f"{mark} {lay.name(i):<{width}}  {str(lay.shapes[i]):<12} {rel[k]:>9.2e} {lower[k]:>8.1e} {upper[k]:>8.1e}  "
            f"{cells}  {', '.join(note)}".rstrip()
        )
    if hidden:
        unresolved = int(open_[hidden].sum())
        what = f"{len(hidden) - unresolved} more passing leaves" + (f" and {unresolved} unresolved" if unresolved else "")
        rows.append(f"  … {what} (largest rel_error {largest(rel[hidden]):.2e}); report(max_leaves=None) shows all")
    unchecked = [f"{lay.paths[i]} ({lay.dtypes[i]})" for i in np.flatnonzero(~np.asarray(lay.checked))]
    if unchecked:
        rows.append(f"  not checked (not floating point): {', '.join(unchecked)}")
    rows += _leaf_eval_rows(res)
    return rows


def _leaf_eval_rows(res) -> list[str]:
    """Which leaves took partial evaluation, and why the others took the plain engine (when it matters)."""
    used, lay = res.leaf_eval, res.layout
    fast = [u for u in used if u in ("partial", "sparse")]
    reasons = {u.partition(": ")[2] for u in used if u.startswith("plain")}
    if not fast and reasons <= {"little to hoist", "traced"}:
        return []
    partial = sum(u == "partial" for u in used)
    sparse = sum(u == "sparse" for u in used)
    row = f"  partial evaluation: {partial} leaves downstream only, {sparse} sparse, of {len(lay.checked_index)}"
    plain: dict[str, list[str]] = {}
    for i, u in enumerate(used):
        if u.startswith("plain"):
            plain.setdefault(u.partition(": ")[2] or "plain", []).append(lay.name(i))
    for reason, paths in plain.items():
        row += f"; plain engine ({reason}): " + ", ".join(paths[:8]) + (" …" if len(paths) > 8 else "")
    return [row]


def _check_max_leaves(max_leaves) -> None:
    expected = "report(max_leaves=...) must be a non-negative int or None (None shows every leaf)"
    if max_leaves is None:
        return
    if isinstance(max_leaves, bool) or not isinstance(max_leaves, (int, np.integer)):
        raise TypeError(f"{expected}; received {type(max_leaves).__name__}: {max_leaves!r}.")
    if max_leaves < 0:
        raise ValueError(f"{expected}; received {max_leaves!r}.")


def format_report(res, max_leaves: int | None = 40) -> str:
    """The text report of a (possibly batched) check."""
    if is_traced(res):
        return f"{type(res).__name__}({summary_line(res)})"
    _check_max_leaves(max_leaves)
    res = jax.device_get(res)  # one explicit transfer of a result that lives on the device (jit/vmap)
    lines = []
    batch = batch_shape(res)
    if batch:
        passed = np.asarray(res.passed).reshape(-1)
        failed = np.asarray(res.failed).reshape(-1)
        rel = np.asarray(res.rel_error, dtype=float).reshape(-1)
        bad = np.flatnonzero(failed)
        open_ = np.flatnonzero(~passed & ~failed)
        worst_seed = int(order(np.where(failed, np.inf, rel), passed)[0]) if not failed.any() else int(bad[np.argmax(rel[bad])])
        listing = lambda ix: ", ".join(map(str, ix[:20])) + (" …" if ix.size > 20 else "")  # noqa: E731
        parts = []
        if bad.size:
            parts.append(f"{bad.size} FAILED (seeds {listing(bad)})")
        if open_.size:
            parts.append(f"{open_.size} INCONCLUSIVE (seeds {listing(open_)})")
        lines.append(
            f"jgc batched check over {passed.size} seeds (batch shape {batch}): "
            + ("; ".join(parts) if parts else "all passed")
            + f"; rel_error min {smallest(rel):.2e}, max {largest(rel):.2e}"
        )
        lines.append(f"worst seed {worst_seed}:")
        res = select(res, worst_seed)
    lines.append(f"jgc {res.kind} " + verdict_line(res))
    lines += _autodiff_lines(res)
    lines += _extra_lines(res)
    lines += _leaf_rows(res, max_leaves)
    return "\n".join(lines)


def worst(res, k: int = 5) -> list[Coordinate]:
    """The k coordinates with the largest |numeric − analytic|, non-finite ones first."""
    if is_traced(res):
        raise TypeError("worst() needs concrete values: call it on the result returned from jit/vmap.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"worst(k) needs a non-negative int k; received {k!r}.")
    res = jax.device_get(res)
    batch = batch_shape(res)
    nb = len(batch)
    n_seeds = int(np.prod(batch)) if batch else 1
    lay = res.layout
    numeric, analytic = jax.tree_util.tree_leaves(res.numeric), jax.tree_util.tree_leaves(res.analytic)
    cands = []
    for i in lay.checked_index:
        num = np.asarray(numeric[i]).reshape((n_seeds, -1))
        ana = np.asarray(analytic[i]).reshape(num.shape)
        key = np.where(np.isfinite(num) & np.isfinite(ana), np.abs(num - ana), np.inf)
        key = np.where(np.isnan(num) & np.isnan(ana), -np.inf, key)  # not sampled
        top = np.argsort(-key, axis=None, kind="stable")[:k]
        for flat in top[key.reshape(-1)[top] > -np.inf]:
            s, j = np.unravel_index(flat, key.shape)
            cands.append((key[s, j], int(s), i, int(j), float(num[s, j]), float(ana[s, j])))
    cands.sort(key=lambda c: -c[0])
    out = []
    for _, s, i, j, num, ana in cands[:k]:
        shape = np.shape(numeric[i])[nb:]  # the leaf's shape; directions: (num,)
        index = tuple(int(v) for v in np.unravel_index(j, shape))
        out.append(Coordinate(s if nb else None, lay.paths[i], index, num, ana))
    return out
