"""More passes of the same pipeline, on concrete inputs: resolve what is open, confirm what failed.

After the first verdict a group (leaf) is *open* when it neither passed nor failed: the error
its finite differences may carry does not let them tell an error of `tol` from none. A group
*failed* on one measurement only: a stencil that straddles a kink, or a bound that
underestimates, can fake a discrepancy. `settle` runs, on the host, as many further passes of
the pipeline (probes → engine → measure → decide) as it takes, each returning a new `State`:

1. **resolve** the open groups' entries: in **float64** for a check whose least precise leaf
   is float32 (x64 for the call only, params and args cast, the analytic side too, so a
   correct gradient is judged against float64's rounding), when the float64 functions are
   *the same function*: J(θ) and the gradient in float64 agree with their float32 values
   within float32's rounding (a loss that draws its dropout mask or a constant by dtype
   does not, and is then not re-checked: the report says why). Otherwise **better steps**
   (`LADDER` rounds) for the entries that use up their group's tolerance: the error of D(h)
   is modelled as truncation t·(h'/h)^p plus rounding r·h/h', and h' minimises it.
2. **confirm** every failure: each proven entry of a failed group is measured again at a
   second step — float64 for a float32 check where valid, else the same precision at h/8 —
   and only the part of the discrepancy *both* measurements prove, with the same sign,
   counts (`combine`): a discrepancy that changes with the step was truncation or a kink
   crossing, and the better measurement decides.

What the passes cost is counted (`resolve_evals`, `confirm_evals`) and what they did is kept
per group as codes (`how`), for the report. Under a trace nothing here runs: what is open
stays inconclusive, and a probe that may straddle a kink proves nothing (`jgc/_measure.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from . import _stencils, _tree, _verdict
from ._measure import Calibration, Measured

LADDER = 1
CONFIRM_ROUNDS = 3
SMALLER = 8.0  # the confirming step, in the check's own precision: h / SMALLER

# `how`, per group (bit flags): what decided it beyond the first measurement
FLOAT64, STEPS, CONFIRMED, WITHDRAWN = 1, 2, 4, 8

# `recheck`: the float64 re-check of a float32 check
NOT_NEEDED, RAN, NOT_FLOAT64, OTHER_FUNCTION, NOT_TRACEABLE, LOWER_PRECISION = range(6)


@dataclasses.dataclass(frozen=True)
class State:
    """A check after some passes (host values). Nothing here is written after it is made."""

    measured: Measured  # per probe
    decision: _verdict.Decision
    cal: Calibration
    final: np.ndarray  # (k,) nothing more precise can be tried for this group
    how: np.ndarray  # (k,) int8 bit flags
    confirmed: np.ndarray  # (P,) the entry's proof rests on two measurements
    in64: np.ndarray  # (P,) the entry was measured in float64
    recheck: int = NOT_NEEDED
    resolve_evals: int = 0
    confirm_evals: int = 0


def open_groups(decision) -> np.ndarray:
    g = decision.groups
    return ~np.asarray(g.passed, bool) & ~np.asarray(g.failed, bool)


def _rowwise(x):
    """Per probe: the largest value over a vector function's outputs."""
    x = np.asarray(x)
    return x if x.ndim == 1 else x.max(axis=tuple(range(1, x.ndim)))


def proven(m: Measured) -> np.ndarray:
    """Per entry: the part of |D − A| beyond twice the bound (0 at a kink or where unknown)."""
    D, A = np.asarray(m.numeric), np.asarray(m.analytic)
    ok = np.asarray(m.known) & np.isfinite(D) & np.isfinite(A)
    d = np.where(np.asarray(m.kink) | ~ok, 0, np.abs(np.where(ok, D - A, 0)))
    return np.where(ok, np.maximum(d - 2 * np.asarray(m.bound), 0), 0)


def combine(first: Measured, second: Measured) -> Measured:
    """`second` (the better measurement) with a bound that leaves, as proven, only what both prove
    with the same sign: min(proven₁, proven₂) (0 where the signs differ)."""
    p1, p2 = proven(first), proven(second)
    s1 = np.sign(np.asarray(first.numeric) - np.asarray(first.analytic))
    s2 = np.sign(np.asarray(second.numeric) - np.asarray(second.analytic))
    both = np.where(s1 == s2, np.minimum(p1, p2), 0)
    d2 = np.where(np.asarray(second.kink), 0, np.abs(np.asarray(second.numeric) - np.asarray(second.analytic)))
    bound = np.where(np.asarray(second.known), np.maximum(np.asarray(second.bound), (d2 - both) / 2), second.bound)
    return dataclasses.replace(second, bound=bound)


def replace_rows(m: Measured, rows: np.ndarray, new: Measured, where=None) -> Measured:
    """`m` with the probes `rows` taken from `new` (where `where`, default everywhere)."""
    out = {}
    take = rows if where is None else rows[where]
    pick = slice(None) if where is None else where
    for f in dataclasses.fields(Measured):
        a = np.array(getattr(m, f.name), copy=True)
        a[take] = np.asarray(getattr(new, f.name))[pick]
        out[f.name] = a
    return Measured(**out)


class Passes:
    """What a check on concrete inputs needs to run more passes of its pipeline (set up by the
    pipeline): `measure(rows, scale)` measures the check's probes `rows` at `scale` × their
    steps in the check's precision; `measure64(rows, scale)` at scale × float64's step (None when the check has no float64
    re-check: it is not float32), returning (Measured or None, evals, recheck code);
    `decide(measured, cal, final)` is the verdict; `rounding(D, h)` the rounding bound."""

    def __init__(self, grouping, stencil, measure, rounding, decide, measure64=None, fallback_tol=None):
        self.grouping, self.stencil, self.measure, self.rounding, self.decide = grouping, stencil, measure, rounding, decide
        self.measure64 = measure64
        self.fallback_tol = fallback_tol  # the default tol when no float64 re-check can run (None: the user's tol)

    def without_float64(self, state: State, code: int) -> State:
        """`state` once the float64 re-check turned out impossible: the default tolerance, which
        assumed it, becomes what the check's own precision resolves."""
        state = dataclasses.replace(state, recheck=code)
        if self.fallback_tol is None or float(state.cal.tol) >= self.fallback_tol:
            return state
        cal = dataclasses.replace(state.cal, tol=np.asarray(self.fallback_tol, np.asarray(state.cal.tol).dtype))
        return dataclasses.replace(state, cal=cal, decision=self.decide(state.measured, cal, state.final))


def _decide(passes: Passes, measured, cal, final):
    return passes.decide(measured, cal, final)


def _advance(passes: Passes, state: State, measured: Measured, in64, how, **fields) -> State:
    """The state after a pass re-measured some entries: a group measured in float64 throughout is
    final, and the verdict is decided again."""
    final = state.final | passes.grouping.groups_of(in64, every=True)
    decision = _decide(passes, measured, state.cal, final)
    return dataclasses.replace(
        state, measured=measured, decision=decision, final=final, how=np.asarray(how, np.int8), in64=in64, **fields
    )


def settle(passes: Passes, state: State) -> State:
    """Resolve, then confirm, until nothing is open that a pass can resolve and every failure is confirmed."""
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are the verdict's to judge
        return _settle(passes, state)


def _settle(passes: Passes, state: State) -> State:
    for _ in range(CONFIRM_ROUNDS):
        before = state
        state = resolve(passes, state)
        state = confirm(passes, state)
        if state is before:
            break
    return withdraw_unconfirmed(passes, state)


# ---------------------------------------------------------------- resolve


def resolve(passes: Passes, state: State) -> State:
    g = passes.grouping
    open_ = open_groups(state.decision)
    rows = g.rows_of(open_[g.seg]) & ~state.in64
    if not rows.any():
        return state
    if passes.measure64 is not None and state.recheck in (NOT_NEEDED, RAN):
        idx = np.flatnonzero(rows)
        new, evals, code = passes.measure64(idx, 1.0)
        if new is not None:
            measured = replace_rows(state.measured, idx, new.astype(state.measured))
            in64 = state.in64.copy()
            in64[idx] = True
            how = np.where(g.groups_of(in64) & open_, state.how | FLOAT64, state.how)
            return _advance(passes, state, measured, in64, how, recheck=RAN, resolve_evals=state.resolve_evals + int(evals))
        state = passes.without_float64(dataclasses.replace(state, resolve_evals=state.resolve_evals + int(evals)), code)
        if not open_groups(state.decision).any():
            return state
    return _ladder(passes, state)


def _budget_users(passes: Passes, measured: Measured, decision, tol) -> np.ndarray:
    """Probes with an entry of an open group whose (d + b) uses more than a quarter of the
    group's budget (all probes of a group where none does)."""
    g = passes.grouping
    open_ = open_groups(decision)
    D, A, b = (g.flat(np.asarray(x)) for x in (measured.numeric, measured.analytic, measured.bound))
    d = np.abs(D - A)
    counts = np.bincount(g.seg, minlength=g.k)
    S = np.sqrt(np.bincount(g.seg, weights=D**2, minlength=g.k)) + np.sqrt(np.bincount(g.seg, weights=A**2, minlength=g.k))
    share = float(tol) * S / np.sqrt(np.maximum(counts, 1))
    users = open_[g.seg] & (d + b > 0.25 * share[g.seg])
    for k in np.flatnonzero(open_):
        members = g.seg == k
        if not users[members].any():
            users |= members
    return g.rows_of(users)


def _ladder(passes: Passes, state: State) -> State:
    """Better steps for the open groups' entries that use up their budget (LADDER rounds)."""
    measured, decision, st = state.measured, state.decision, passes.stencil
    spent, changed = 0, np.zeros(passes.grouping.k, bool)
    for _ in range(LADDER):
        rows = np.flatnonzero(_budget_users(passes, measured, decision, state.cal.tol) & ~state.in64)
        if rows.size == 0:
            break
        h = np.asarray(measured.step)[rows]
        r = _rowwise(passes.rounding(measured.numeric[rows], h))
        t = _rowwise(np.asarray(measured.truncation)[rows])
        doubled = np.asarray(measured.doubled)[rows] & (t > 0)
        safe_t = np.where(t > 0, t, 1.0)
        p = st.order
        factor = np.where(doubled, (np.maximum(r, 1e-300) / (p * safe_t)) ** (1 / (p + 1)), 4.0)
        factor = np.clip(factor, 1 / 64, 64.0)
        factor = np.where(np.isfinite(_rowwise(np.asarray(measured.numeric)[rows])), factor, 1 / 8)  # not finite at θ ± h
        if st.complex:
            factor = np.full_like(factor, 1 / 8)
        new, evals = passes.measure(rows, factor)
        new = new.astype(measured)
        better = _rowwise(new.bound) < _rowwise(np.asarray(measured.bound)[rows])
        measured = replace_rows(measured, rows, new, better)
        spent += int(evals)
        changed |= passes.grouping.groups_of_rows(rows)
        decision = _decide(passes, measured, state.cal, state.final)
        if not open_groups(decision).any():
            break
    if not spent:
        return state
    how = np.where(changed, state.how | STEPS, state.how).astype(np.int8)
    return dataclasses.replace(state, measured=measured, decision=decision, how=how, resolve_evals=state.resolve_evals + spent)


# ---------------------------------------------------------------- confirm


def _to_confirm(passes: Passes, state: State) -> np.ndarray:
    """Probes whose proof makes their group fail and rests on one measurement."""
    g = passes.grouping
    failed = np.asarray(state.decision.groups.failed, bool)
    entries = g.flat(proven(state.measured)) > 0
    return g.rows_of(entries & failed[g.seg]) & ~state.confirmed


def confirm(passes: Passes, state: State) -> State:
    rows = np.flatnonzero(_to_confirm(passes, state))
    if rows.size == 0:
        return state
    first = state.measured.take(rows)
    in64 = state.in64.copy()
    evals, parts, code = 0, [], state.recheck
    if passes.measure64 is not None and state.recheck in (NOT_NEEDED, RAN):
        # float32 entries: float64 at its own step; entries already in float64: at h / SMALLER
        for scale, sel in ((1.0, ~in64[rows]), (1 / SMALLER, in64[rows])):
            if sel.any():
                m, e, code = passes.measure64(rows[sel], scale)
                evals += int(e)
                if m is None:
                    break
                parts.append((sel, m.astype(state.measured)))
        if code == RAN:
            in64[rows] = True
        else:
            parts = []
            state = passes.without_float64(state, code)
    if not parts:
        m, e = passes.measure(rows, 1 / SMALLER)
        parts.append((np.ones(rows.size, bool), m.astype(state.measured)))
        evals += int(e)
    second = first
    for sel, m in parts:
        second = replace_rows(second, np.flatnonzero(sel), m)
    new = combine(first, second)
    measured = replace_rows(state.measured, rows, new)
    confirmed = state.confirmed.copy()
    confirmed[rows] = True
    g = passes.grouping
    touched = g.groups_of_rows(rows)
    after = _advance(
        passes, state, measured, in64, state.how, confirmed=confirmed, recheck=code, confirm_evals=state.confirm_evals + evals
    )
    failed = np.asarray(after.decision.groups.failed, bool)
    was = np.asarray(state.decision.groups.failed, bool)
    how = state.how | np.where(touched & failed, CONFIRMED, 0) | np.where(touched & was & ~failed, WITHDRAWN, 0)
    how = how | np.where(g.groups_of(in64 & ~state.in64), FLOAT64, 0)
    return dataclasses.replace(after, how=how.astype(np.int8))


def withdraw_unconfirmed(passes: Passes, state: State) -> State:
    """A failure must rest on confirmed entries: any proof still resting on one measurement is
    withdrawn (its bound widened to the discrepancy), so its group cannot fail on it."""
    rows = _to_confirm(passes, state)
    if not rows.any():
        return state
    m = state.measured
    d = np.where(np.asarray(m.kink), 0, np.abs(np.asarray(m.numeric) - np.asarray(m.analytic)))
    mask = rows.reshape(rows.shape + (1,) * (d.ndim - 1))
    bound = np.where(mask, np.maximum(np.asarray(m.bound), d / 2), m.bound)
    measured = dataclasses.replace(m, bound=bound)
    decision = _decide(passes, measured, state.cal, state.final)
    was = np.asarray(state.decision.groups.failed, bool)
    how = state.how | np.where(was & ~np.asarray(decision.groups.failed, bool), WITHDRAWN, 0)
    return dataclasses.replace(state, measured=measured, decision=decision, how=how.astype(np.int8))


# ---------------------------------------------------------------- float64: the same function?


def same_function(
    cal32: Calibration, cal64: Calibration, vector32=None, vector64=None, grouping=None, facts32=None, facts64=None
) -> bool:
    """Whether float64 evaluates the function float32 did.

    A loss with the same program in both precisions (the same primitives in order, `facts.shape`)
    that draws nothing random evaluates the same function: whatever differs is float32's
    rounding, however ill-conditioned the loss (a saturated log can move J by 1% and its
    gradient by 30% in float32). Otherwise (a dropout mask drawn with the default float dtype,
    which x64 changes; a program that branches on the dtype) the values must agree: J(θ) within
    float32's rounding (16 levels of its noise, and √u₃₂ relative), and, where there is an
    analytic vector, each leaf of it within 10% (or 10% of the whole gradient's scale for a ~0
    leaf)."""
    if facts32 is not None and facts64 is not None and not facts32.random and facts32.shape == facts64.shape:
        return True
    j32, j64 = np.asarray(cal32.center, np.float64), np.asarray(cal64.center, np.float64)
    level = np.asarray(cal32.level, np.float64)
    u = _stencils.unit(np.float32)
    if not np.all(np.abs(j64 - j32) <= 16 * level + np.sqrt(u) * np.abs(j32)):
        return False
    if vector32 is None or vector64 is None or grouping is None:
        return True
    a, b = np.asarray(vector32, np.float64), np.asarray(vector64, np.float64)
    if a.shape != b.shape:
        return True
    seg = grouping.coordinate_groups
    if seg is None:
        return True
    k = int(seg.max()) + 1 if seg.size else 0
    both = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(both, a, 0), np.where(both, b, 0)  # non-finite values fail the check on their own
    diff = np.sqrt(np.bincount(seg, weights=(a - b) ** 2, minlength=k))
    size = np.sqrt(np.bincount(seg, weights=a**2, minlength=k)) + np.sqrt(np.bincount(seg, weights=b**2, minlength=k))
    rms = (np.linalg.norm(a) + np.linalg.norm(b)) / np.sqrt(max(1, a.size))
    counts = np.sqrt(np.bincount(seg, minlength=k))
    return bool(np.all((diff <= 0.1 * size) | (diff <= 0.1 * rms * counts)))


def to_float64(params, args):
    """Params and args with their float leaves cast to float64 (call under x64)."""
    return _tree.to_float64((params, args))


def x64():
    return jax.enable_x64(True)
