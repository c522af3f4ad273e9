"""Host-side text for the results of check_adjoint, taylor_test and check_rule. Pure, never traced."""

from __future__ import annotations

import jax
import numpy as np

from ._typing import Tracer

TRACED = "traced; call .report() on the value returned from jit/vmap"


def _traced(*arrays) -> bool:
    return any(isinstance(a, Tracer) for a in arrays)


def _batched(x) -> bool:
    return bool(np.ndim(x))


def _batch_line(passed, failed, noun: str) -> str:
    passed, failed = np.asarray(passed).reshape(-1), np.asarray(failed).reshape(-1)
    return f"{int(failed.sum())} of {passed.size} {noun} failed, {int((~passed & ~failed).sum())} inconclusive"


def _select(res, index: int):
    """The index-th result of a batched one (batch axes flattened)."""
    nb = np.ndim(res.passed)
    return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((-1,) + np.shape(x)[nb:])[index], res)


def _worst_index(res) -> int:
    passed, failed = np.asarray(res.passed).reshape(-1), np.asarray(res.failed).reshape(-1)
    order = np.lexsort((passed, ~failed))  # failed first, then not passed
    return int(order[0])


def _status(res) -> str:
    return "passed" if bool(res.passed) else "FAILED" if bool(res.failed) else "INCONCLUSIVE"


# ---------------------------------------------------------------- check_adjoint


def _block_name(res, i: int, j: int) -> str:
    x, y = res.x_paths[i], res.y_paths[j]
    if not x and not y:
        return "A"
    return f"y{y} ← x{x}"


def adjoint_line(res) -> str:
    if _traced(res.passed):
        return TRACED
    if _batched(res.passed):
        return _batch_line(res.passed, res.failed, "checks") + f", worst rel_error {np.nanmax(np.asarray(res.rel_error)):.2e}"
    tol = float(res.tol)
    lower, upper = np.asarray(res.lower, float), np.asarray(res.upper, float)
    pairs = np.shape(res.mismatch)[0]
    cost = f"{pairs} random pairs, {res.dtype}, {res.num_evals_A} A and {res.num_evals_AT} AT evaluations"
    if bool(res.passed):
        what = f"⟨Ax, y⟩ = ⟨x, ATy⟩ within tol {tol:.1e} (largest possible mismatch {np.max(upper):.1e})"
    elif bool(res.failed):
        bad = np.asarray(res.block_failed)
        names = [_block_name(res, i, j) for i, j in zip(*np.nonzero(bad), strict=True)]
        if not np.all(np.isfinite(np.asarray(res.mismatch))):
            what = "a mismatch is not finite"
        else:
            what = f"⟨Ax, y⟩ ≠ ⟨x, ATy⟩ beyond rounding (proven mismatch {np.max(lower):.1e} > tol {tol:.1e})"
        if names != ["A"]:
            what += f" in {', '.join(names[:6])}" + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    else:
        what = (
            f"the rounding bound cannot resolve tol {tol:.1e} (possible mismatch up to {np.max(upper):.1e}, "
            f"proven {np.max(lower):.1e}); operator rounding levels {np.max(np.asarray(res.rounding_A)):.1e} (A), "
            f"{np.max(np.asarray(res.rounding_AT)):.1e} (AT): in float32 try float64, or a larger tol"
        )
    return f"{_status(res)}: {what}; rel_error {float(res.rel_error):.2e} ({cost})"


def format_adjoint(res) -> str:
    if _traced(res.passed):
        return f"jgc check_adjoint: {TRACED}"
    if _batched(res.passed):
        head = f"jgc check_adjoint, batched: {adjoint_line(res)}"
        index = _worst_index(res)
        return head + f"\nworst check (#{index}):\n" + format_adjoint(_select(res, index))
    lines = [f"jgc check_adjoint {adjoint_line(res)}"]
    lower, upper = np.asarray(res.lower, float), np.asarray(res.upper, float)
    D, S = np.abs(np.asarray(res.mismatch, float)), np.asarray(res.scale, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.sqrt(np.sum(D**2, axis=0)) / np.sqrt(np.sum(S**2, axis=0))
    rel = np.where(np.sum(S**2, axis=0) > 0, rel, np.where(np.sum(D**2, axis=0) > 0, np.inf, 0.0))
    failed, passed = np.asarray(res.block_failed), np.asarray(res.block_passed)
    rows = []
    for i in range(len(res.x_paths)):
        for j in range(len(res.y_paths)):
            mark = "✗" if failed[i, j] else " " if passed[i, j] else "?"
            rows.append(
                (
                    not failed[i, j],
                    -rel[i, j],
                    f"{mark} {_block_name(res, i, j):<22} {rel[i, j]:9.2e}  {np.max(lower[:, i, j]):7.1e}  "
                    f"{np.max(upper[:, i, j]):7.1e}  {float(res.rounding_A[i, j]):9.1e}  {float(res.rounding_AT[i, j]):9.1e}",
                )
            )
    lines.append(f"  {'block':<22} {'rel_error':>9}  {'proven':>7}  {'possible':>7}  {'ρ(A)':>9}  {'ρ(AT)':>9}")
    lines += [r[2] for r in sorted(rows, key=lambda r: (r[0], r[1]))]
    return "\n".join(lines)
