"""Host-side formatting of a GradCheck: the text report and worst(k). Pure, never traced."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class Coordinate(NamedTuple):
    """One coordinate of a checked gradient, as returned by `GradCheck.worst`."""

    seed: int | None
    path: str
    index: tuple[int, ...]
    numeric: float
    analytic: float


_FLOAT32_NOTE = (
    "note: float32 verdicts are weaker (finite differences keep ~3-4 digits); for a firm "
    "verdict check in float64: check_grad(..., x64=True) (outside jit), or `with "
    "jax.enable_x64(True):` and cast params with jax.tree.map(lambda x: x.astype(jnp.float64), params)."
)


_EVALS = {"check_vjp": "f", "check_jvp": "f", "check_hvp": "gradient"}  # what num_evals counts


def _is_traced(res) -> bool:
    return isinstance(res.rel_error, jax.core.Tracer)


def _batch_shape(res) -> tuple[int, ...]:
    return np.shape(res.rel_error)


def _select(res, seed: int):
    """The `seed`-th check of a batched result (batch axes flattened)."""
    nb = len(_batch_shape(res))
    return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[nb:])[seed], res)


def _order(rel: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """Indices, failing first, then by decreasing error, NaN counted as the worst."""
    key = np.where(np.isnan(rel), np.inf, rel)
    return np.lexsort((-key, passed))


def _leaves(res, tree):
    return jax.tree_util.tree_leaves(tree)


def summary_line(res) -> str:
    if _is_traced(res):
        return "traced; call .report() on the value returned from jit/vmap"
    batch = _batch_shape(res)
    if batch:
        passed = np.asarray(res.passed).reshape(-1)
        return f"{passed.size - passed.sum()} of {passed.size} checks failed, worst rel_error {np.nanmax(np.asarray(res.rel_error)):.2e}"
    return _verdict(res)


def _verdict(res) -> str:
    ok = bool(res.passed)
    rel, tol = float(res.rel_error), float(res.tol)
    cmp = "<=" if rel <= tol else (">" if np.isfinite(rel) else "is not finite vs")
    if res.excess_rel_error is not None:
        ex = float(res.excess_rel_error)
        cmp = "<=" if ex <= tol else (">" if np.isfinite(ex) else "is not finite vs")
        err = f"rel_error {rel:.2e}, beyond noise {ex:.2e} {cmp} tol {tol:.1e}, noise floor {float(res.noise_floor):.1e}"
    else:
        err = f"rel_error {rel:.2e} {cmp} tol {tol:.1e}"
    status = "passed" if ok else "FAILED"
    if res.deterministic is not None and not bool(res.deterministic):
        status = "FAILED (the loss is not deterministic)"
    return (
        f"{status}: {err} "
        f"({res.method}, eps {float(res.eps):.1e}, {np.asarray(res.eps).dtype.name}, "
        f"{_scope(res)}, {int(res.num_evals):,} {_EVALS.get(res.check, 'loss')} evaluations)"
    )


def _autodiff_lines(res) -> list[str]:
    """The three distances of `check_grad(..., autodiff=True)` and what they point at."""
    if res.autodiff is None:
        return []
    tol = float(res.tol)
    d = {"manual vs numeric": float(res.rel_error), "manual vs autodiff": float(res.rel_error_autodiff)}
    d["autodiff vs numeric"] = float(res.rel_error_autodiff_numeric)
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
        auto = jax.tree_util.tree_leaves(res.autodiff)
        numeric = jax.tree_util.tree_leaves(res.numeric)
        errs = [(_leaf_distance(auto[i], numeric[i]), res.layout.paths[i]) for i in res.layout.checked_index]
        worst_err, worst_path = max(errs)
        where = f" (autodiff vs numeric worst leaf {worst_path}: {worst_err:.2e})" if an else ""
        lines.append(f"  → {diagnosis}{where}")
    return lines


def _leaf_distance(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom else 0.0


def _scope(res) -> str:
    """What was probed: every coordinate, a sample of them, or random directions per leaf."""
    n = res.layout.n
    if getattr(res, "num_directions", None) is not None:
        return f"{res.num_directions} directions per leaf over {n:,} coordinates"
    if getattr(res, "sampled", None) is not None:
        return f"{res.sampled:,} of {n:,} coordinates sampled"
    return f"{n:,} coordinates"


def _unsampled(res, num: np.ndarray, ana: np.ndarray) -> np.ndarray:
    """Coordinates a sampled check did not look at (NaN in both numeric and analytic)."""
    if getattr(res, "sampled", None) is None:
        return np.zeros(np.shape(num), bool)
    return np.isnan(num) & np.isnan(ana)


_NONDETERMINISTIC = (
    "the loss is not deterministic: two evaluations at the same θ gave {a!r} and {b!r}, so "
    "finite differences measure noise. Draw randomness (dropout masks, sampling) from a PRNG key "
    "passed in *args, e.g. loss_fn(params, x, key) with jax.random.bernoulli(key, ...), never from "
    "state that changes between calls."
)


def _extra_lines(res) -> list[str]:
    """Lines after the verdict: non-determinism, kinks."""
    lines = []
    if res.deterministic is not None and not bool(res.deterministic):
        a, b = (float(v) for v in np.asarray(res.loss_values))
        lines.append(_NONDETERMINISTIC.format(a=a, b=b))
    if res.noise_floor is not None and float(res.noise_floor) > float(res.tol):
        lines.append(
            f"warning: the noise floor {float(res.noise_floor):.1e} exceeds tol {float(res.tol):.1e}: finite "
            "differences cannot resolve errors this small here, so a pass is weak. Check in float64 "
            "(check_grad(..., x64=True)) or try another eps."
        )
    if res.kink is not None:
        lay = res.layout
        kinks = [(lay.paths[i], int(np.sum(np.asarray(k)))) for i, k in enumerate(_leaves(res, res.kink)) if lay.checked[i]]
        total = sum(c for _, c in kinks)
        if total:
            where = ", ".join(f"{p}: {c}" for p, c in kinks if c)
            lines.append(
                f"{total} kink{'s' if total > 1 else ''} ({where}): the loss is not differentiable within the "
                "stencil there and the analytic value lies between the one-sided derivatives (a valid "
                "subgradient), so they are not failures"
            )
    return lines


def _hint_text(res, i: int, num, ana) -> str:
    if res.hint is None:
        return ""
    from . import _diagnose

    code = int(np.asarray(_leaves(res, res.hint)[i]))
    if code == _diagnose.NONE:
        return ""
    param = float(np.asarray(_leaves(res, res.hint_param)[i]))
    rows = None
    if code in (_diagnose.ROWS, _diagnose.COLUMNS):
        shape = res.layout.shapes[i]
        d = np.asarray(num, float) - np.asarray(ana, float)
        d = d.reshape(shape[0], -1) if code == _diagnose.ROWS else d.reshape(-1, shape[-1]).T
        e = np.sum(d * d, axis=1)
        rows = [int(j) for j in np.flatnonzero(e > _diagnose._SHARE * e.sum())]
    return "hint: " + _diagnose.describe(code, param, rows)


def _fmt_index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, index)) + ("," if len(index) == 1 else "") + ")"


def _leaf_rows(res, max_leaves: int | None) -> list[str]:
    lay = res.layout
    numeric, analytic = _leaves(res, res.numeric), _leaves(res, res.analytic)
    leaf_rel = np.asarray(_leaves(res, res.leaf_rel_error), dtype=float)
    leaf_ok = np.asarray(_leaves(res, res.leaf_passed), dtype=bool)
    checked = np.asarray(lay.checked)
    rows, unchecked = [], []
    order = [i for i in _order(leaf_rel, leaf_ok) if checked[i]]
    shown = [i for i in order if not leaf_ok[i]]
    passing = [i for i in order if leaf_ok[i]]
    hidden = passing[max_leaves:] if max_leaves is not None else []
    shown += passing[: len(passing) - len(hidden)]
    width = max(len("leaf"), *(len(lay.paths[i]) for i in shown)) if shown else 4
    label = getattr(res, "index_label", "worst index")
    noise = _leaves(res, res.leaf_noise_floor) if res.leaf_noise_floor is not None else None
    header = f"  {'leaf':<{width}}  {'shape':<12} {'rel_error':>9}  {label:<12} {'numeric':>11} {'analytic':>11}  note"
    if noise is not None:
        header = header.replace("  note", f"  {'noise':>7}  note")
    rows.append(header)
    for i in shown:
        num, ana = np.asarray(numeric[i]), np.asarray(analytic[i])
        diff = np.abs(num - ana)
        skipped = _unsampled(res, num, ana)
        bad = ~(np.isfinite(num) & np.isfinite(ana)) & ~skipped
        key = np.where(skipped, -1.0, np.where(bad, np.inf, diff))
        w = np.unravel_index(int(np.argmax(key)), num.shape) if num.size else ()
        note = [f"{int(num.size - skipped.sum()):,} of {num.size:,} sampled"] if skipped.any() else []
        if bad.any():
            note.append(f"{int(bad.sum())} non-finite")
        if res.kink is not None and lay.checked[i]:
            nk = int(np.sum(np.asarray(_leaves(res, res.kink)[i])))
            if nk:
                note.append(f"{nk} kink{'s' if nk > 1 else ''}")
        hint = _hint_text(res, i, num, ana) if not leaf_ok[i] else ""
        if hint:
            note.append(hint)
        mark = "✗" if not leaf_ok[i] or bad.any() else " "
        nz = f"{float(np.asarray(noise[i])):>7.1e}  " if noise is not None else ""
        rows.append(
            f"{mark} {lay.paths[i]:<{width}}  {str(lay.shapes[i]):<12} {leaf_rel[i]:>9.2e}  "
            f"{_fmt_index(tuple(int(j) for j in w)):<12} {float(num[w]):>11.4e} {float(ana[w]):>11.4e}  "
            f"{nz}{', '.join(note)}".rstrip()
        )
    if hidden:
        rows.append(
            f"  … {len(hidden)} more passing leaves (largest rel_error {leaf_rel[hidden[0]]:.2e}); report(max_leaves=None) shows all"
        )
    for i in np.flatnonzero(~checked):
        unchecked.append(f"{lay.paths[i]} ({lay.dtypes[i]})")
    if unchecked:
        rows.append(f"  not checked (not floating point): {', '.join(unchecked)}")
    rows += _leaf_eval_rows(res)
    return rows


def _leaf_eval_rows(res) -> list[str]:
    """With partial evaluation on: which leaves took the partial path, which the plain engine and why."""
    used = getattr(res, "leaf_eval", ())
    if not used:
        return []
    lay = res.layout
    partial = [lay.paths[i] for i, u in enumerate(used) if u == "partial"]
    sparse = [lay.paths[i] for i, u in enumerate(used) if u == "sparse"]
    plain: dict[str, list[str]] = {}
    for i, u in enumerate(used):
        if u.startswith("plain"):
            plain.setdefault(u.partition(": ")[2] or "plain", []).append(lay.paths[i])
    row = f"  partial evaluation: {len(partial)} leaves downstream only, {len(sparse)} sparse, of {len(lay.checked_index)}"
    for reason, paths in plain.items():
        shown = ", ".join(paths[:8]) + (" …" if len(paths) > 8 else "")
        row += f"; plain engine ({reason}): {shown}"
    return [row]


def format_report(res, max_leaves: int | None = 40) -> str:
    """The text report of a (possibly batched) GradCheck."""
    if _is_traced(res):
        return f"GradCheck({summary_line(res)})"
    lines = []
    batch = _batch_shape(res)
    if batch:
        passed = np.asarray(res.passed).reshape(-1)
        rel = np.asarray(res.rel_error, dtype=float).reshape(-1)
        failed = np.flatnonzero(~passed)
        worst_seed = int(_order(rel, passed)[0])
        listing = ", ".join(map(str, failed[:20])) + (" …" if failed.size > 20 else "")
        lines.append(
            f"jgc batched check over {passed.size} seeds (batch shape {batch}): "
            + (f"{failed.size} FAILED (seeds {listing})" if failed.size else "all passed")
            + f"; rel_error min {np.nanmin(rel):.2e}, max {np.nanmax(rel):.2e}"
        )
        lines.append(f"worst seed {worst_seed}:")
        res = _select(res, worst_seed)
    lines.append(f"jgc {getattr(res, 'report_title', res.check)} " + _verdict(res))
    lines += _autodiff_lines(res)
    lines += _extra_lines(res)
    lines += _leaf_rows(res, max_leaves)
    if res.layout.low_dtype.name == "float32":
        lines.append(_FLOAT32_NOTE)
    return "\n".join(lines)


def worst(res, k: int = 5) -> list[Coordinate]:
    """The k coordinates with the largest |numeric − analytic|, non-finite ones first."""
    if _is_traced(res):
        raise TypeError("worst() needs concrete values: call it on the result returned from jit/vmap.")
    batch = _batch_shape(res)
    nb = len(batch)
    n_seeds = int(np.prod(batch)) if batch else 1
    lay = res.layout
    cands = []
    for i in lay.checked_index:
        num = np.asarray(jax.tree_util.tree_leaves(res.numeric)[i]).reshape((n_seeds, -1) if nb else (1, -1))
        ana = np.asarray(jax.tree_util.tree_leaves(res.analytic)[i]).reshape(num.shape)
        key = np.where(np.isfinite(num) & np.isfinite(ana), np.abs(num - ana), np.inf)
        key = np.where(_unsampled(res, num, ana), -np.inf, key)
        top = np.argsort(-key, axis=None, kind="stable")[:k]
        for flat in top[key.reshape(-1)[top] > -np.inf]:
            s, j = np.unravel_index(flat, key.shape)
            cands.append((key[s, j], int(s), i, int(j), float(num[s, j]), float(ana[s, j])))
    cands.sort(key=lambda c: -c[0])
    out = []
    for _, s, i, j, num, ana in cands[:k]:
        shape = np.shape(jax.tree_util.tree_leaves(res.numeric)[i])[nb:]  # the leaf's shape; directions: (num,)
        index = tuple(int(v) for v in np.unravel_index(j, shape))
        out.append(Coordinate(s if nb else None, lay.paths[i], index, num, ana))
    return out
