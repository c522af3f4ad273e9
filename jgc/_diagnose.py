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

import numpy as np

from ._verdict import segment_sum

NONE, SCALED, ZERO, TRANSPOSED, L2, ROWS, COLUMNS = range(7)
NAMES = {NONE: "", SCALED: "scaled", ZERO: "zero", TRANSPOSED: "transposed", L2: "l2", ROWS: "rows", COLUMNS: "columns"}

_FIT = 0.05  # a model fits when its residual is below 5% of what it explains
SHARE = 1e-3  # a row or column "carries error" when it holds more than this share of it


def _index_maps(lay):
    """Static per-coordinate maps (NumPy): transpose permutation, global row and column ids."""
    perm, rows, cols, row_leaf, col_leaf = [], [], [], [], []
    square, matrix, nrows, ncols = [], [], [], []
    for k, (i, o, s) in enumerate(zip(lay.checked_index, lay.offsets, lay.sizes, strict=True)):
        shape = lay.shapes[i]
        idx = np.arange(s)
        is_square = len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1
        perm.append(o + (idx.reshape(shape).T.reshape(-1) if is_square else idx))
        r = shape[0] if len(shape) >= 2 else 1
        c = shape[-1] if len(shape) >= 2 else 1
        rows.append(len(row_leaf) + idx // max(1, s // max(r, 1)))
        cols.append(len(col_leaf) + (idx % c))
        row_leaf += [k] * r
        col_leaf += [k] * c
        square.append(is_square)
        matrix.append(len(shape) >= 2)
        nrows.append(r)
        ncols.append(c)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, int)  # noqa: E731
    return dict(
        perm=cat(perm),
        rows=cat(rows),
        cols=cat(cols),
        row_leaf=np.asarray(row_leaf, int),
        col_leaf=np.asarray(col_leaf, int),
        square=np.asarray(square, bool),
        matrix=np.asarray(matrix, bool),
        nrows=np.asarray(nrows),
        ncols=np.asarray(ncols),
    )


def _safe_div(xp, a, b):
    return xp.where(b == 0, xp.zeros_like(a), a / xp.where(b == 0, 1, b))


def diagnose(xp, lay, theta, numeric, analytic, leaf_failed):
    """Per checked leaf (θ order): hint codes (int32) and parameters; NONE for passing leaves.

    Vectorised over all coordinates with segment sums, so the cost does not grow with
    the number of leaves. `xp` is NumPy on the host, jax.numpy under a trace.
    """
    maps = _index_maps(lay)
    k = len(lay.sizes)
    seg = lay.segments
    finite = xp.isfinite(numeric) & xp.isfinite(analytic)
    numeric, analytic = xp.where(finite, numeric, 0), xp.where(finite, analytic, 0)
    ssum = lambda x, ids=seg, n=k: segment_sum(xp, x, ids, n)  # noqa: E731
    diff = numeric - analytic
    first = ssum(xp.stack([numeric**2, analytic**2, diff**2, analytic * numeric, diff * theta, theta**2], axis=-2))
    nn, aa, dd, an, dt, tt = (first[..., i, :] for i in range(6))
    fit2 = _FIT**2
    c = _safe_div(xp, an, nn)
    lam = _safe_div(xp, dt, tt)
    residuals = [(analytic - c[seg] * numeric) ** 2, (analytic - numeric[maps["perm"]]) ** 2, (diff - lam[seg] * theta) ** 2]
    second = ssum(xp.stack(residuals, axis=-2))
    r_scaled, r_transposed, r_l2 = (second[..., i, :] for i in range(3))

    zero = (nn > 0) & (aa <= fit2 * nn)
    scaled = (nn > 0) & (r_scaled <= fit2 * aa) & (xp.abs(c - 1) > _FIT)
    transposed = xp.asarray(maps["square"]) & (dd > 0) & (r_transposed <= fit2 * dd)
    l2 = (dd > 0) & (lam != 0) & (r_l2 <= fit2 * dd)

    def confined(ids, owner, count_per_leaf):
        order = np.argsort(ids, kind="stable")  # group ids must be sorted for the segment sum
        err = segment_sum(xp, (diff * diff)[order], ids[order], len(owner))
        bad = err > SHARE * dd[owner]
        count = segment_sum(xp, bad.astype(np.int32), owner, k)
        ok = xp.asarray(maps["matrix"]) & (dd > 0) & (count >= 1) & (2 * count <= count_per_leaf) & (count_per_leaf > 1)
        return ok, count

    rows_ok, nrows = confined(maps["rows"], maps["row_leaf"], maps["nrows"])
    cols_ok, ncols = confined(maps["cols"], maps["col_leaf"], maps["ncols"])

    code = xp.full((k,), NONE, np.int32)
    param = xp.zeros((k,), theta.dtype)
    # the first shape that fits wins: apply in reverse order of priority
    for ok, new_code, new_param in (
        (cols_ok, COLUMNS, ncols),
        (rows_ok, ROWS, nrows),
        (l2, L2, lam),
        (transposed, TRANSPOSED, 0),
        (scaled, SCALED, c),
        (zero, ZERO, 0),
    ):
        code = xp.where(ok, new_code, code).astype(np.int32)
        param = xp.where(ok, xp.asarray(new_param, theta.dtype), param)
    return xp.where(leaf_failed, code, NONE).astype(np.int32), xp.where(leaf_failed, param, 0).astype(theta.dtype)


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
