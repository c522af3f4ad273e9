"""Diagnosis: a hint for each failing leaf when its discrepancy has a recognisable shape.

Pure array code (it runs inside the check, so hints cross jit and vmap): for each
checked leaf it returns a hint code and one parameter.

  code        shape of the discrepancy                       parameter
  NONE        nothing recognised (or the leaf passed)        0
  SCALED      analytic ≈ c · numeric                         c
  ZERO        analytic ≈ 0 while numeric is not              0
  TRANSPOSED  analytic ≈ numeric transposed (square 2-D)     0
  L2          numeric − analytic ≈ λ · θ (an L2 term)        λ
  ROWS        error confined to some rows (axis 0)           number of rows
  COLUMNS     error confined to some columns (last axis)     number of columns

The tests are tried in this order and the first that fits wins. A shape "fits" when
the residual of the fitted model is below `_FIT` of the discrepancy it explains.
"""

from __future__ import annotations

import jax.numpy as jnp

NONE, SCALED, ZERO, TRANSPOSED, L2, ROWS, COLUMNS = range(7)
NAMES = {NONE: "", SCALED: "scaled", ZERO: "zero", TRANSPOSED: "transposed", L2: "l2", ROWS: "rows", COLUMNS: "columns"}

_FIT = 0.05  # a model fits when its residual is below 5% of what it explains
_SHARE = 1e-3  # a row or column "carries error" when it holds more than this share of it


def _norm(x):
    return jnp.sqrt(jnp.sum(x * x))


def _safe_div(a, b):
    return jnp.where(b == 0, jnp.zeros_like(a), a / jnp.where(b == 0, 1, b))


def _confined(err2d):
    """(confined, count): error lives in a strict minority of the rows of a 2-D array."""
    rows = jnp.sum(err2d * err2d, axis=1)
    total = jnp.sum(rows)
    bad = rows > _SHARE * total
    count = jnp.sum(bad)
    return (total > 0) & (count >= 1) & (2 * count <= rows.shape[0]) & (rows.shape[0] > 1), count


def diagnose_leaf(numeric, analytic, theta, shape):
    """(hint code, parameter) for one leaf; arrays are flat, `shape` is the leaf's shape."""
    dtype = numeric.dtype
    diff = numeric - analytic
    n_num, n_ana, n_diff = _norm(numeric), _norm(analytic), _norm(diff)
    code, param = jnp.asarray(NONE, jnp.int32), jnp.asarray(0, dtype)
    found = jnp.asarray(False)

    def take(code, param, found, ok, new_code, new_param):
        use = ok & ~found
        return jnp.where(use, new_code, code), jnp.where(use, jnp.asarray(new_param, dtype), param), found | ok

    # analytic ≈ 0
    zero = (n_num > 0) & (n_ana <= _FIT * n_num)
    code, param, found = take(code, param, found, zero, ZERO, 0)
    # analytic ≈ c · numeric (c ≠ 1)
    c = _safe_div(jnp.sum(analytic * numeric), n_num * n_num)
    scaled = (n_num > 0) & (_norm(analytic - c * numeric) <= _FIT * n_ana) & (jnp.abs(c - 1) > _FIT)
    code, param, found = take(code, param, found, scaled, SCALED, c)
    # analytic ≈ numericᵀ
    if len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1:
        nt = numeric.reshape(shape).T.reshape(-1)
        transposed = (n_diff > 0) & (_norm(analytic - nt) <= _FIT * n_diff)
        code, param, found = take(code, param, found, transposed, TRANSPOSED, 0)
    # numeric − analytic ≈ λ · θ
    lam = _safe_div(jnp.sum(diff * theta), jnp.sum(theta * theta))
    l2 = (n_diff > 0) & (lam != 0) & (_norm(diff - lam * theta) <= _FIT * n_diff)
    code, param, found = take(code, param, found, l2, L2, lam)
    # error confined to some rows / some columns
    if len(shape) >= 2:
        rows_ok, rows = _confined(diff.reshape(shape[0], -1))
        code, param, found = take(code, param, found, rows_ok, ROWS, rows)
        cols_ok, cols = _confined(diff.reshape(-1, shape[-1]).T)
        code, param, found = take(code, param, found, cols_ok, COLUMNS, cols)
    return code, param


def diagnose(lay, theta, numeric, analytic, leaf_failed):
    """Per checked leaf (θ order): hint codes (int32) and parameters; NONE for passing leaves."""
    codes, params = [], []
    for k, (i, o, s) in enumerate(zip(lay.checked_index, lay.offsets, lay.sizes, strict=True)):
        sl = slice(o, o + s)
        code, param = diagnose_leaf(numeric[sl], analytic[sl], theta[sl], lay.shapes[i])
        codes.append(jnp.where(leaf_failed[k], code, NONE))
        params.append(jnp.where(leaf_failed[k], param, 0))
    return jnp.stack(codes), jnp.stack(params)


def _fraction(c: float) -> str:
    """2 → '2', 0.5 → '1/2', -1 → '-1', 0.25 → '1/4', else 3 significant digits."""
    for v, fmt in ((c, "{}"), (1 / c if c else 0, "1/{}")):
        r = round(v)
        if r != 0 and abs(v - r) <= 0.01 * abs(v):
            return fmt.format(r) if r > 0 or fmt == "{}" else "-" + fmt.format(-r)
    return f"{c:.3g}"


def describe(code: int, param: float, rows: list[int] | None = None) -> str:
    """Host-side text of a hint (empty for NONE)."""
    if code == SCALED:
        return f"analytic ≈ {_fraction(param)} × numeric"
    if code == ZERO:
        return "analytic ≈ 0 (a missing term or gradient?)"
    if code == TRANSPOSED:
        return "analytic ≈ numeric transposed"
    if code == L2:
        return f"numeric − analytic ≈ {param:.3g}·θ (forgotten or mis-scaled L2 term, λ ≈ {param:.3g})"
    if code in (ROWS, COLUMNS):
        what = ("row" if code == ROWS else "column") + ("s" if int(param) != 1 else "")
        listing = (" " + str(rows[:8])[:-1] + (", …]" if len(rows) > 8 else "]")) if rows else ""
        return f"error confined to {int(param)} {what}{listing}"
    return ""
