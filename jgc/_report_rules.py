"""Host-side text for the results of check_adjoint, taylor_test and check_rule. Pure, never traced."""

from __future__ import annotations

import jax
import numpy as np

from . import _report
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


class Outcome:
    """What the results of check_adjoint, taylor_test and check_rule share (host-side): the
    third outcome, `status`, and `report()`, `str()` and `repr()` from this module's text."""

    @property
    def inconclusive(self):
        return ~self.passed & ~self.failed

    @property
    def status(self) -> str:
        if np.ndim(self.passed):
            raise ValueError("status is for one check; a batched result has one per check (use passed/failed arrays).")
        return "passed" if bool(self.passed) else "failed" if bool(self.failed) else "inconclusive"

    def report(self) -> str:
        return _TEXT[self.kind][0](self)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_TEXT[self.kind][1](self)})"


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
        return _batch_line(res.passed, res.failed, "checks") + f", worst rel_error {_report.largest(res.rel_error):.2e}"
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


# ---------------------------------------------------------------- taylor_test


def taylor_line(res) -> str:
    if _traced(res.passed):
        return TRACED
    if _batched(res.passed):
        return _batch_line(res.passed, res.failed, "tests")
    p = res.expected_rate
    term = "⟨g, h⟩" if res.order == 1 else "⟨h, Hh⟩"
    rate = float(res.rate)
    rate_txt = f"rate {rate:.2f}" if np.isfinite(rate) else "no rate"
    rounding = float(res.rounding_eps)
    where = f"rounding took over below ε = {rounding:.1e}" if np.isfinite(rounding) else "every rung above rounding"
    cost = f"{res.order}st-order, {res.dtype}, {res.num_evals} loss evaluations".replace("2st", "2nd")
    bound = float(res.rel_error_bound)
    if bool(res.passed):
        if np.isfinite(rate):
            what = f"{rate_txt} (expected {p}): {term} agrees within {bound:.1e} (tol {float(res.tol):.1e})"
        else:
            what = f"the remainder stays at the rounding level: {term} agrees within {bound:.1e} (tol {float(res.tol):.1e})"
    elif bool(res.failed):
        if res.order == 2 and bool(res.gradient_failed):
            what = "the gradient is wrong: its own remainder falls at rate 1"
        elif not (np.isfinite(float(res.loss)) and np.isfinite(float(res.directional)) and np.isfinite(float(res.curvature))):
            what = "a value is not finite (J(θ), ⟨g, h⟩ or ⟨h, Hh⟩)"
        else:
            what = f"{rate_txt} (expected {p}, wrong terms give {p - 1}): {term} is off by {float(res.rel_error):.1e} (relative)"
    else:
        resolved = int(np.sum(np.asarray(res.resolved)))
        if resolved < 3:
            what = f"only {resolved} rungs above rounding"
        elif bool(res.structured):
            what = "the loss has structure finer than the ladder (its noise grows with the spacing)"
        elif not np.all(np.asarray(res.asymptotic)):
            what = f"{rate_txt}: the loss is not in its asymptotic regime on the ladder (its higher differences do not fall)"
        else:
            what = (
                f"{rate_txt}: neither {p} nor {p - 1} proven; {term} agrees within {bound:.1e} at best (tol {float(res.tol):.1e})"
            )
        what += "; try another eps0 (or float64)"
    return f"{_status(res)}: {what}; {where} ({cost})"


def format_taylor(res) -> str:
    if _traced(res.passed):
        return f"jgc taylor_test: {TRACED}"
    if _batched(res.passed):
        index = _worst_index(res)
        return f"jgc taylor_test, batched: {taylor_line(res)}\nworst test (#{index}):\n" + format_taylor(_select(res, index))
    lines = [f"jgc taylor_test {taylor_line(res)}"]
    lines.append(f"  {'eps':>9}  {'remainder':>11}  {'± bound':>9}  {'rate':>6}  note")
    eps, R, b = (np.asarray(x, float) for x in (res.eps, res.remainder, res.bound))
    rates, resolved, wrong = np.asarray(res.rates, float), np.asarray(res.resolved), np.asarray(res.proven_wrong)
    K = len(eps)
    for k in range(K):
        rate = f"{rates[k]:6.2f}" if k < K - 1 and np.isfinite(rates[k]) else " " * 6
        note = "" if resolved[k] else "at rounding"
        if k < K - 1 and wrong[k]:
            note = "not the remainder of right terms"
        if k >= K - 3:
            note = (note + ", " if note else "") + "(noise table)"
        lines.append(f"  {eps[k]:9.2e}  {R[k]:11.3e}  {b[k]:9.1e}  {rate}  {note}")
    return "\n".join(lines)


# ---------------------------------------------------------------- check_rule


def rule_line(res) -> str:
    if _traced(res.tol):
        return TRACED
    if _batched(res.tol):
        return _batch_line(res.passed, res.failed, "checks")
    if bool(res.passed):
        what = f"every rule agrees on {len(res.in_paths)} inputs × {len(res.out_paths)} outputs"
    elif bool(res.failed):
        parts = []
        pf = np.asarray(res.pair_failed)
        pairs = [f"{res.in_paths[i] or 'x'} → out{res.out_paths[o]}" for i, o in zip(*np.nonzero(pf), strict=True)]
        if pairs:
            parts.append("wrong for " + ", ".join(pairs[:6]) + (f" and {len(pairs) - 6} more" if len(pairs) > 6 else ""))
        prim = np.asarray(res.primal_error, float)
        bad = [f"out{res.out_paths[o]}" for o in range(len(res.out_paths)) if np.any(prim[o] > float(res.tol))]
        if bad:
            parts.append("primal output differs from f at " + ", ".join(bad))
        inputs = np.asarray(res.input_failed)
        only_in = [res.in_paths[i] or "x" for i in np.nonzero(inputs)[0] if not pf[i].any()]
        if only_in:
            parts.append("the VJP is wrong for " + ", ".join(only_in))
        if not parts:
            parts.append("a sub-check failed (see below)")
        what = "; ".join(parts)
    else:
        what = "no rule proven wrong, but a sub-check could not resolve its tolerance (see below)"
    rules = "JVP " + ("✓" if not res.jvp_missing else "—") + ", VJP " + ("✓" if not res.vjp_missing else "—")
    return f"{_status(res)}: {what} ({rules}; {res.num_evals} f evaluations in the finite-difference checks)"


def _cell(value, tol, zero=False) -> str:
    if np.isnan(value):
        return f"{'—':>9}"
    bad = value != 0 if zero else not value <= tol
    return f"{value:8.1e}{'✗' if bad else ' '}"


def _sub_status(r) -> str:
    return "passed" if bool(r.passed) else "FAILED" if bool(r.failed) else "inconclusive"


def format_rule(res) -> str:
    if _traced(res.tol):
        return f"jgc check_rule: {TRACED}"
    if _batched(res.tol):
        index = _worst_index(res)
        return f"jgc check_rule, batched: {rule_line(res)}\nworst check (#{index}):\n" + format_rule(_select(res, index))
    tol = float(res.tol)
    lines = [f"jgc check_rule {rule_line(res)}"]
    pf = np.asarray(res.pair_failed)
    jvp_f = np.asarray(res._jvp_pair("failed")) if res.jvp is not None else None
    jvp_p = np.asarray(res._jvp_pair("passed")) if res.jvp is not None else None
    vjp_f = np.asarray(res._vjp_pair("failed")) if res.vjp else None
    vjp_p = np.asarray(res._vjp_pair("passed")) if res.vjp else None
    adj = np.asarray(res.adjoint.block_failed) if res.adjoint is not None else None
    adj_rel = None
    if res.adjoint is not None:
        D, S = np.abs(np.asarray(res.adjoint.mismatch, float)), np.asarray(res.adjoint.scale, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            adj_rel = np.where(S.max(0) > 0, D.max(0) / np.where(S.max(0) > 0, S.max(0), 1), 0.0)

    def verdict(f, p, i, o):
        if f is None:
            return f"{'—':>7}"
        return f"{'✗ fail' if f[i, o] else 'ok' if p[i, o] else '? unres':>7}"

    head = f"  {'input → output':<28} {'JVP·fd':>7} {'VJP·fd':>7} {'JVP·VJP':>9} {'sym-zero':>9} {'vmap JVP':>9} {'vmap VJP':>9}"
    lines.append(head)
    rows = []
    for i, ip in enumerate(res.in_paths):
        for o, op in enumerate(res.out_paths):
            mark = "✗" if pf[i, o] else " "
            adj_cell = f"{'—':>9}" if adj is None else f"{adj_rel[i, o]:8.1e}{'✗' if adj[i, o] else ' '}"
            rows.append(
                (
                    not pf[i, o],
                    f"{mark} {(ip or 'x') + ' → out' + op:<28} {verdict(jvp_f, jvp_p, i, o)} {verdict(vjp_f, vjp_p, i, o)} "
                    f"{adj_cell} {_cell(float(res.symbolic_error[i, o]), tol)} {_cell(float(res.vmap_jvp[i, o]), tol)} "
                    f"{_cell(float(res.vmap_vjp[i, o]), tol)}",
                )
            )
    lines += [r[1] for r in sorted(rows, key=lambda r: r[0])]
    lines.append(f"  {'output':<28} {'primal·JVP':>10} {'primal·VJP':>10} {'JVP(0)':>9} {'vmap f':>9}")
    prim = np.asarray(res.primal_error, float)
    for o, op in enumerate(res.out_paths):
        lines.append(
            f"  {'out' + op:<28} {_cell(prim[o, 0], tol):>10} {_cell(prim[o, 1], tol):>10} "
            f"{_cell(float(res.zero_jvp[o]), tol, zero=True)} {_cell(float(res.vmap_primal[o]), tol)}"
        )
    zv = np.asarray(res.zero_vjp, float)
    if np.any(~np.isnan(zv)):
        lines.append(
            "  VJP(0) per input: "
            + ", ".join(f"{p or 'x'} {_cell(zv[i], tol, zero=True).strip()}" for i, p in enumerate(res.in_paths))
        )
    subs = []
    if res.jvp is not None:
        subs.append(f"check_jvp {_sub_status(res.jvp)} (rel_error {float(res.jvp.rel_error):.1e}, tol {float(res.jvp.tol):.0e})")
    for k, r in enumerate(res.vjp):
        where = f" out{res.out_paths[k]}" if res.vjp_per_output else ""
        subs.append(f"check_vjp{where} {_sub_status(r)} (rel_error {float(r.rel_error):.1e}, tol {float(r.tol):.0e})")
    if res.adjoint is not None:
        subs.append(f"check_adjoint {_sub_status(res.adjoint)} (rel_error {float(res.adjoint.rel_error):.1e})")
    lines.append("  sub-checks: " + "; ".join(subs))
    if res.jvp_missing:
        lines.append(f"  no JVP: {res.jvp_missing}")
    if res.vjp_missing:
        lines.append(f"  no VJP: {res.vjp_missing}")
    for p, why in res.unchecked_in:
        lines.append(f"  not checked: input {p} ({why})")
    for p, why in res.unchecked_out:
        lines.append(f"  not checked: output {p} ({why})")
    lines.append(f"  exact checks: relative difference, ✗ beyond tol {tol:.0e} (JVP(0), VJP(0): ✗ unless exactly 0)")
    return "\n".join(lines)


_TEXT = {
    "check_adjoint": (format_adjoint, adjoint_line),
    "taylor_test": (format_taylor, taylor_line),
    "check_rule": (format_rule, rule_line),
}
