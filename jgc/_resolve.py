"""Resolve instead of giving up: float64, or better steps, for what stays unresolved.

After the first verdict, a group (leaf) that neither passed nor failed is *unresolved*:
the error its finite differences may carry does not let them tell an error of `tol` from
none. On concrete inputs it is re-measured:

1. **float64**, for a check whose least precise leaf is float32, when the loss and the
   gradient follow their inputs' dtype: the unresolved groups' entries are measured again
   with x64 enabled for the call, params and args cast to float64 (the analytic side too,
   so a correct gradient is judged against float64's rounding, not float32's), and their
   failure floor follows the loss's float64 rounding level (no lower than float32
   storage's u^(2/3)). This comes first: it resolves what better float32
   steps would only narrow.
2. Otherwise, **a better step per entry** (at most `LADDER` rounds) for the entries that
   use up their group's tolerance: the error of D(h) is modelled as truncation t·(h'/h)^p
   plus rounding r·h/h' (t from the Richardson estimate where it was measured, r from the
   loss's rounding level), and h' minimises it (clamped to [h/64, 64·h]; ×4 where only
   rounding was seen). The stencil is evaluated at h' and 2h' and an entry takes the new
   value when its bound shrank.

Both reuse the check's probes; what they cost is added to `num_evals` and the report
says what was done. Under a trace nothing here runs: unresolved stays inconclusive.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import _stencils, _tree
from ._measure import Measured

LADDER = 1


def _open(decision) -> np.ndarray:
    g = decision.groups
    return ~np.asarray(g.passed, bool) & ~np.asarray(g.failed, bool)


def _budget_users(measured: Measured, decision, seg, tol) -> np.ndarray:
    """Entries of unresolved groups whose (d + b) uses more than a quarter of the group's budget
    (all entries of a group where none does)."""
    open_ = _open(decision)
    d = np.abs(np.asarray(measured.numeric) - np.asarray(measured.analytic))
    b = np.asarray(measured.bound)
    if d.ndim > 1:
        d, b = d.max(axis=tuple(range(1, d.ndim))), b.max(axis=tuple(range(1, b.ndim)))
    counts = np.bincount(seg, minlength=open_.size)
    num = np.abs(np.asarray(measured.numeric))
    ana = np.abs(np.asarray(measured.analytic))
    if num.ndim > 1:
        num, ana = num.max(axis=tuple(range(1, num.ndim))), ana.max(axis=tuple(range(1, ana.ndim)))
    n2 = np.bincount(seg, weights=num**2, minlength=open_.size)
    a2 = np.bincount(seg, weights=ana**2, minlength=open_.size)
    S = np.sqrt(n2) + np.sqrt(a2)
    share = float(tol) * S / np.sqrt(np.maximum(counts, 1))
    in_open = open_[seg]
    users = in_open & (d + b > 0.25 * share[seg])
    for g in np.flatnonzero(open_):
        members = seg == g
        if not users[members].any():
            users |= members
    return users


def _merge(old: Measured, rows: np.ndarray, new: Measured) -> Measured:
    """`old` with the entries `rows` replaced by `new` where its bound is smaller."""
    nb, ob = np.asarray(new.bound), np.asarray(old.bound)[rows]
    better = nb < ob if nb.ndim == 1 else np.max(nb, axis=tuple(range(1, nb.ndim))) < np.max(ob, axis=tuple(range(1, ob.ndim)))
    out = {}
    for f in dataclasses.fields(Measured):
        a = np.array(getattr(old, f.name), copy=True)
        b = np.asarray(getattr(new, f.name))
        take = rows[better]
        a[take] = b[better]
        out[f.name] = a
    return Measured(**out)


def resolve(session, probes, measured: Measured, decision, decide, seg):
    """float64 (float32 checks), else the step ladder, for unresolved groups (host only). Returns (measured, decision)."""
    if not _open(decision).any():
        return measured, decision
    start = session.evals
    measured, decision = _resolve(session, probes, measured, decision, decide, seg)
    session.resolve_evals = int(session.evals - start)
    return measured, decision


def _resolve(session, probes, measured: Measured, decision, decide, seg):
    # float64 first where it applies: it resolves what adapted float32 steps would only narrow.
    # It costs a compile: worth it for a firm verdict on every leaf, also next to a leaf that
    # failed (the report then tells which leaves are right), but not when the loss is what failed
    leaf_failure = bool(np.asarray(decision.groups.failed).any())
    if (leaf_failure or not bool(decision.failed)) and session.problem.lay.low_dtype == np.float32:
        measured, decision, ran = _in_float64(session, probes, measured, decision, decide, seg)
        if ran:
            return measured, decision
        if not session.problem.tol_given:  # RECHECKED_TOL assumed a float64 re-check: float32's own tol
            session.tol = np.asarray(_stencils.default_tol(np.float32, session.problem.method), session.problem.dtype)
            session.notes.append(f"tol {float(session.tol):.0e}: what float32 finite differences resolve on their own")
            decision = decide(measured)
            if not _open(decision).any():
                return measured, decision
    st = session.problem.stencil
    p = st.order
    ladder = 0
    for _ in range(LADDER):
        rows = np.flatnonzero(_budget_users(measured, decision, seg, session.tol))
        if rows.size == 0:
            break
        h = np.asarray(measured.step)[rows]
        r = np.asarray(session.rounding_bound(measured.numeric[rows], h))
        t = np.asarray(measured.truncation)[rows]
        if r.ndim > 1:
            r, t = r.max(axis=tuple(range(1, r.ndim))), t.max(axis=tuple(range(1, t.ndim)))
        doubled = np.asarray(measured.doubled)[rows] & (t > 0)
        safe_t = np.where(t > 0, t, 1.0)
        factor = np.where(doubled, (np.maximum(r, 1e-300) / (p * safe_t)) ** (1 / (p + 1)), 4.0)
        factor = np.clip(factor, 1 / 64, 64.0)
        if st.complex:
            factor = np.full_like(factor, 1 / 8)
        sub = probes.take(rows)
        sub = dataclasses.replace(sub, base=(np.asarray(sub.base) * factor).astype(np.asarray(sub.base).dtype))
        new = session.measure(sub, None if measured.analytic is None else np.asarray(measured.analytic)[rows], force=True)
        ladder += rows.size
        measured = _merge(measured, rows, new)
        decision = decide(measured)
        if not _open(decision).any():
            break
    if ladder:
        session.notes.append(f"{ladder} coordinate(s) of unresolved leaves re-measured with adapted steps")
    return measured, decision


def _in_float64(session, probes, measured, decision, decide, seg):
    """Measure the unresolved groups' entries again in float64 (x64 for the call only).
    Returns (measured, decision, whether it ran: False when the functions do not follow their
    inputs' dtype)."""
    from ._measure import Session
    from ._problem import Problem

    problem = session.problem
    open_ = _open(decision)
    rows = np.flatnonzero(open_[seg])
    paths = [problem.lay.name(problem.lay.checked_index[g]) for g in np.flatnonzero(open_)]
    with jax.enable_x64(True):
        params, args = _tree.to_float64((problem.params, problem.args))
        try:
            p64 = Problem(
                problem.fn, params, args, problem.method, None if not problem.tol_given else problem.tol, name=problem.name
            )
            out = jax.eval_shape(lambda: problem.fn(params, *args))
            if jnp.dtype(out.dtype) != jnp.float64:
                session.notes.append(
                    f"no float64 re-check of {', '.join(paths)}: loss_fn does not return float64 for float64 inputs"
                )
                return measured, decision, False
            analytic = p64.gradient(problem.grad_fn, False, problem.grad_name)[0]
            s64 = Session(p64, probes.kind, rows.size, key=session.key, project=analytic if probes.kind != "coords" else None)
        except (TypeError, ValueError) as e:  # a function that does not follow its inputs' dtype
            session.notes.append(f"no float64 re-check of {', '.join(paths)}: {str(e).splitlines()[0][:160]}")
            return measured, decision, False
        sub = probes.take(rows)
        if not problem.stencil.complex:
            # the step that balanced float32's rounding against truncation, moved to where float64's
            # does: rounding ∝ u/h and truncation ∝ h^p put the best step at ∝ u^(1/(p+1))
            ratio = (np.finfo(np.float64).eps / np.finfo(problem.lay.low_dtype).eps) ** (1 / (problem.stencil.order + 1))
            sub = dataclasses.replace(sub, base=np.asarray(sub.base, np.float64) * ratio)
        wanted = None if probes.kind != "coords" else np.asarray(analytic)[np.asarray(sub.start)]
        new, _ = s64.first(sub, wanted)
        evals = s64.evals + 1
    new = Measured(
        *(
            np.asarray(getattr(new, f.name)).astype(np.asarray(getattr(measured, f.name)).dtype)
            for f in dataclasses.fields(Measured)
        )
    )
    merged = {}
    for f in dataclasses.fields(Measured):
        a = np.array(getattr(measured, f.name), copy=True)
        a[rows] = np.asarray(getattr(new, f.name))
        merged[f.name] = a
    measured = Measured(**merged)
    session.extra_evals += int(evals)
    session.notes.append(
        f"float64 re-check of {', '.join(paths)} ({rows.size} entries, {int(evals):,} loss evaluations in float64)"
    )
    session.final = True
    # the re-checked groups' floor: their loss's float64 rounding level, but no lower than what
    # storing the values in float32 adds (u₃₂^(2/3), as for any float32 check)
    u = float(np.finfo(problem.lay.low_dtype).eps)
    floor64 = float(np.asarray(s64.floor)) if problem.tol_given else max(float(np.asarray(s64.rel_level)), u) ** (2 / 3)
    session.group_floor = np.where(open_, floor64, float(np.asarray(session.floor)))
    return measured, decide(measured), True
