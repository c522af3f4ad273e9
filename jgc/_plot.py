"""Host-side plot of a GradCheck (matplotlib, imported only when called).

Left: one bar per checked leaf, its relative error on a log scale, failing leaves in
red, the tolerance as a dashed line. Right: a heatmap of |numeric − analytic| for the
worst failing 2-D leaf (or the leaf asked for), its worst coordinate circled.
"""

from __future__ import annotations

import numpy as np

from ._report import batch_shape, is_traced, order, select, verdict_line

_PASS, _FAIL, _OPEN, _TOL = "#4c9a6a", "#c8423b", "#d9a441", "#333333"


def _leaf_data(res):
    import jax

    lay = res.layout
    rel = np.asarray(jax.tree_util.tree_leaves(res.leaf_rel_error), dtype=float)
    ok = np.asarray(jax.tree_util.tree_leaves(res.leaf_passed), dtype=bool)
    failed = np.asarray(jax.tree_util.tree_leaves(res.leaf_failed), dtype=bool)
    numeric = [np.asarray(x, dtype=float) for x in jax.tree_util.tree_leaves(res.numeric)]
    analytic = [np.asarray(x, dtype=float) for x in jax.tree_util.tree_leaves(res.analytic)]
    for i in lay.checked_index:
        bad = ~(np.isfinite(numeric[i]) & np.isfinite(analytic[i]))
        ok[i] &= not bad.any()
        failed[i] |= bad.any()
    return lay, rel, ok, failed, numeric, analytic


def _pick_leaf(lay, rel, ok, leaf):
    if leaf is not None:
        if leaf not in lay.paths:
            raise ValueError(f"leaf={leaf!r} is not a leaf of this result; expected one of {list(lay.paths)}.")
        i = lay.paths.index(leaf)
        if not lay.checked[i] or len(lay.shapes[i]) != 2:
            raise ValueError(f"leaf={leaf!r} has shape {lay.shapes[i]} ({lay.dtypes[i]}); a heatmap needs a checked 2-D leaf.")
        return i
    for i in order(rel, ok):
        if lay.checked[i] and not ok[i] and len(lay.shapes[i]) == 2:
            return int(i)
    return None


def plot(res, leaf: str | None = None):
    """The figure of `GradCheck.plot`; see there."""
    from matplotlib.figure import Figure

    if is_traced(res):
        raise TypeError("plot() needs concrete values: call it on the result returned from jit/vmap.")
    title_prefix = ""
    if batch_shape(res):
        passed = np.asarray(res.passed).reshape(-1)
        rel_all = np.asarray(res.rel_error, dtype=float).reshape(-1)
        seed = int(order(rel_all, passed)[0])
        title_prefix = f"worst of {passed.size} seeds (seed {seed}) — "
        res = select(res, seed)
    lay, rel, ok, failed, numeric, analytic = _leaf_data(res)
    heat = _pick_leaf(lay, rel, ok, leaf)

    checked = [i for i in order(rel, ok) if lay.checked[i]][::-1]  # worst at the top
    height = max(3.2, 0.32 * len(checked) + 1.6)
    fig = Figure(figsize=(12 if heat is not None else 7.5, height), layout="constrained")
    if heat is not None:
        ax_bar, ax_heat = fig.subplots(1, 2, width_ratios=[1.1, 1])
    else:
        ax_bar, ax_heat = fig.subplots(1, 1), None

    tol = float(res.tol)
    values = np.array([rel[i] for i in checked])
    positive = values[np.isfinite(values) & (values > 0)]
    lo = min(positive.min() if positive.size else tol, tol) / 10
    hi = max(positive.max() if positive.size else tol, tol) * 10
    shown = np.where(np.isfinite(values), np.maximum(values, lo), np.nan)  # exact zeros sit on the axis
    colors = [_FAIL if failed[i] else _PASS if ok[i] else _OPEN for i in checked]
    y = np.arange(len(checked))
    ax_bar.barh(y, shown, color=colors, height=0.65)
    ax_bar.set_xscale("log")
    ax_bar.set_yticks(y, [f"{lay.paths[i]}  {lay.shapes[i]}" for i in checked], fontsize=8, family="monospace")
    ax_bar.axvline(tol, color=_TOL, linestyle="--", linewidth=1.2, label=f"tol {tol:.0e}")
    ax_bar.set_xlim(lo, hi)
    for yi, v, x in zip(y, values, shown, strict=True):
        label = ("0" if v == 0 else f"{v:.1e}") if np.isfinite(v) else "non-finite"
        ax_bar.text((x if np.isfinite(x) else lo) * 1.25, float(yi), label, va="center", ha="left", fontsize=7, color=_TOL)
    ax_bar.set_xlabel("relative error per leaf  ‖num − ana‖ / (‖num‖ + ‖ana‖)")
    ax_bar.grid(axis="x", which="major", alpha=0.3)
    ax_bar.set_axisbelow(True)
    from matplotlib.patches import Patch

    ax_bar.legend(
        handles=[
            Patch(color=_PASS, label="passed"),
            Patch(color=_FAIL, label="failed"),
            Patch(color=_OPEN, label="unresolved"),
            ax_bar.lines[0],
        ],
        loc="best",
        fontsize=8,
        framealpha=0.9,
    )
    ax_bar.set_title("per-leaf relative error", fontsize=10)

    if heat is not None:
        assert ax_heat is not None
        diff = np.abs(numeric[heat] - analytic[heat])
        im = ax_heat.imshow(np.where(np.isfinite(diff), diff, np.nan), cmap="magma", aspect="auto", interpolation="nearest")
        key = np.where(np.isfinite(diff), diff, np.inf)
        r, c = np.unravel_index(int(np.argmax(key)), diff.shape)
        ax_heat.scatter([c], [r], s=160, facecolors="none", edgecolors="#22c3e6", linewidths=2)
        ax_heat.set_title(f"|numeric − analytic| on {lay.paths[heat]}  (worst at {(int(r), int(c))})", fontsize=10)
        ax_heat.set_xlabel("column")
        ax_heat.set_ylabel("row")
        fig.colorbar(im, ax=ax_heat, shrink=0.9, label="|numeric − analytic|")
    verdict, _, details = verdict_line(res).partition(" (")
    title = f"{title_prefix}jgc {res.kind} {verdict}\n({details}"
    fig.suptitle(title, fontsize=10, color=_TOL if bool(res.passed) else _FAIL if bool(res.failed) else _OPEN)
    return fig
