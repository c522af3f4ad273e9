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
    "verdict check in float64: `with jax.enable_x64(True):` and cast params with "
    "jax.tree.map(lambda x: x.astype(jnp.float64), params)."
)


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
    lay = res.layout
    ok = bool(res.passed)
    rel, tol = float(res.rel_error), float(res.tol)
    cmp = "<=" if rel <= tol else (">" if np.isfinite(rel) else "is not finite vs")
    return (
        f"{'passed' if ok else 'FAILED'}: rel_error {rel:.2e} {cmp} tol {tol:.1e} "
        f"({res.method}, eps {float(res.eps):.1e}, {lay.dtype.name}, "
        f"{lay.n:,} coordinates, {int(res.num_evals):,} loss evaluations)"
    )


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
    header = f"  {'leaf':<{width}}  {'shape':<12} {'rel_error':>9}  {'worst index':<12} {'numeric':>11} {'analytic':>11}  note"
    rows.append(header)
    for i in shown:
        num, ana = np.asarray(numeric[i]), np.asarray(analytic[i])
        diff = np.abs(num - ana)
        bad = ~(np.isfinite(num) & np.isfinite(ana))
        key = np.where(bad, np.inf, diff)
        w = np.unravel_index(int(np.argmax(key)), num.shape) if num.size else ()
        note = []
        if bad.any():
            note.append(f"{int(bad.sum())} non-finite")
        mark = "✗" if not leaf_ok[i] or bad.any() else " "
        rows.append(
            f"{mark} {lay.paths[i]:<{width}}  {str(lay.shapes[i]):<12} {leaf_rel[i]:>9.2e}  "
            f"{_fmt_index(tuple(int(j) for j in w)):<12} {float(num[w]):>11.4e} {float(ana[w]):>11.4e}  {', '.join(note)}".rstrip()
        )
    if hidden:
        rows.append(f"  … {len(hidden)} more passing leaves (largest rel_error {leaf_rel[hidden[0]]:.2e}); report(max_leaves=None) shows all")
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
    lines.append("jgc check_grad " + _verdict(res))
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
        top = np.argsort(-key, axis=None, kind="stable")[:k]
        for flat in top:
            s, j = np.unravel_index(flat, key.shape)
            cands.append((key[s, j], int(s), i, int(j), float(num[s, j]), float(ana[s, j])))
    cands.sort(key=lambda c: -c[0])
    out = []
    for _, s, i, j, num, ana in cands[:k]:
        index = tuple(int(v) for v in np.unravel_index(j, lay.shapes[i]))
        out.append(Coordinate(s if nb else None, lay.paths[i], index, num, ana))
    return out
