"""The dot-product test: is `AT` the adjoint of the linear map `A`?  No finite differences.

For random x and y, ⟨A x, y⟩ = ⟨x, AT y⟩ holds exactly when AT is the adjoint; in floating
point the two sides differ by rounding, which is bounded here, not guessed:

- the inner products are summed in a fixed pairwise tree (`jgc/_rounding.py`), so each
  carries at most γ_{⌈log₂ m⌉+1}·Σ|aᵢbᵢ|;
- the operators' own rounding e = fl(A x) − A x is measured: A is linear, so the
  residual A(x) − A(x₁) − A(x₂) with x₁ + x₂ = x (a random split) is made of rounding
  alone; its size relative to the outputs is the operator's rounding level ρ_A (the
  largest over the pairs, never below one rounding of the output, u). y is drawn
  independently of x (random signs), so |⟨e, y⟩| ≤ 6·‖e‖ but for a 2e-8 chance (Hoeffding), and ‖e‖ ≤ 4·ρ_A·‖A x‖ (the level is an estimate; 4 is the
  margin jgc puts on every estimated rounding level). Likewise for AT.

The mismatch D = ⟨A x, y⟩ − ⟨x, AT y⟩ is compared with the spread of ⟨A x, y⟩ over y,
S = (‖A x‖ + ‖AT y‖)/2 (x, y have unit-variance entries): for AT = Aᵀ + F, D has standard
deviation ‖F‖_F and S ≈ ‖A‖_F, so |D|/S estimates the relative error of the adjoint
‖F‖_F / ‖A‖_F whatever the dimensions. Per pair, the mismatch beyond its rounding bound b
is *proven*, (|D| − b)/S, and |D| + b the *possible* one, (|D| + b)/S. The verdict is jgc's
three outcomes: failed when the proven mismatch exceeds `tol` on two pairs (a second
measurement) or a value is not finite; passed when the possible mismatch is within `tol` on
every pair; inconclusive otherwise. With `blocks=True` the test runs per (input leaf,
output leaf) block — x restricted to one leaf, y to one leaf — and names the wrong block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _rounding, _signs, _validate
from ._report_rules import Outcome
from ._typing import Array, PyTree, Tracer

KG = 6.0  # random-sign projection: |⟨e, y⟩| ≤ KG·‖e‖ but for 2·exp(−KG²/2) = 3e-8
KR = 4.0  # margin on a measured rounding level
FAIL_PAIRS = 2  # a failure is proven on this many pairs (or on all of them when fewer)

_DEFAULT_TOL = {"float64": 1e-9, "float32": 1e-3, "float16": 3e-2, "bfloat16": 1e-1}


def default_tol(dtype) -> float:
    return _DEFAULT_TOL[jnp.dtype(jnp.finfo(dtype).dtype).name]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class AdjointCheck(Outcome):
    """The outcome of `jgc.check_adjoint`: passed, failed or inconclusive.

    Arrays gain leading batch axes under `jax.vmap`. Per-pair arrays have shape
    (pair, x block, y block); with `blocks=False` there is one block each way.

    Attributes:
      passed, failed: bool arrays (see the module docstring for the rule).
      rel_error: ‖D‖/‖S‖ over the pairs (every block): the estimated relative error of the
        adjoint, ‖AT − Aᵀ‖_F / ‖A‖_F.
      tol: the relative mismatch a pass guarantees.
      mismatch: D = ⟨A x, y⟩ − ⟨x, AT y⟩ per pair and block.
      scale: S = (‖A x‖ + ‖AT y‖)/2 per pair and block.
      bound: the rounding bound on D per pair and block.
      rounding_A, rounding_AT: the operators' measured relative rounding levels per block.
      num_evals_A, num_evals_AT: operator evaluations.
      x_paths, y_paths: the blocks' leaf paths (one "" block each with `blocks=False`).
      dtype: the lowest precision among x and y.
    """

    passed: Array
    failed: Array
    rel_error: Array
    tol: Array
    mismatch: Array
    scale: Array
    bound: Array
    rounding_A: Array
    rounding_AT: Array
    num_evals_A: int = dataclasses.field(metadata=dict(static=True))
    num_evals_AT: int = dataclasses.field(metadata=dict(static=True))
    x_paths: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    y_paths: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    kind: ClassVar[str] = "check_adjoint"

    @property
    def lower(self) -> jax.Array:
        """Proven relative mismatch per pair and block: (|D| − bound)/S, at least 0."""
        xp = xp_of(self.mismatch, self.bound)
        return _ratio(xp.maximum(xp.abs(self.mismatch) - self.bound, 0), self.scale)

    @property
    def upper(self) -> jax.Array:
        """Possible relative mismatch per pair and block: (|D| + bound)/S."""
        return _ratio(xp_of(self.mismatch).abs(self.mismatch) + self.bound, self.scale)

    @property
    def block_failed(self) -> jax.Array:
        """bool (x block, y block): proven beyond tol on FAIL_PAIRS pairs, or not finite."""
        return _block_failed(self.mismatch, self.scale, self.bound, self.tol)

    @property
    def block_passed(self) -> jax.Array:
        """bool (x block, y block): the possible mismatch within tol on every pair."""
        upper = self.upper
        return xp_of(upper, self.tol).all(upper <= _col(self.tol, upper), axis=-3) & ~self.block_failed


def xp_of(*arrays):
    """NumPy for host arrays (a result of concrete inputs), jax.numpy otherwise."""
    return np if all(isinstance(a, (np.ndarray, np.generic, float, int)) for a in arrays) else jnp


def _col(x, like):
    xp = xp_of(x, like)
    x = xp.asarray(x)
    return xp.reshape(x, x.shape + (1,) * (like.ndim - x.ndim))


def _ratio(num, den):
    """num/den, 0 where both are 0 and inf where only den is."""
    xp = xp_of(num, den)
    with np.errstate(all="ignore"):
        safe = xp.where(den > 0, den, 1)
        return xp.where(den > 0, num / safe, xp.where(num > 0, xp.inf, 0.0))


def _block_failed(mismatch, scale, bound, tol):
    xp = xp_of(mismatch, scale, bound, tol)
    lower = _ratio(xp.maximum(xp.abs(mismatch) - bound, 0), scale)
    pairs = mismatch.shape[-3]
    proven = xp.sum(lower > _col(tol, lower), axis=-3) >= min(FAIL_PAIRS, pairs)
    finite = xp.all(xp.isfinite(mismatch) & xp.isfinite(scale) & xp.isfinite(bound), axis=-3)
    return proven | ~finite


# ---------------------------------------------------------------- structure


@dataclasses.dataclass(frozen=True)
class Space:
    """A pytree of floating-point arrays (real or complex) as one flat vector per leaf."""

    treedef: object
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @staticmethod
    def of(tree, name: str) -> Space:
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        paths, shapes, dtypes = [], [], []
        for path, leaf in leaves:
            dtype = getattr(leaf, "dtype", None)
            if dtype is None or not hasattr(leaf, "shape"):
                raise TypeError(
                    f"{name}{jax.tree_util.keystr(path)} is {type(leaf).__name__}; expected an array or jax.ShapeDtypeStruct."
                )
            if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
                raise TypeError(
                    f"{name}{jax.tree_util.keystr(path)} has dtype {jnp.dtype(dtype).name}; a linear map acts on "
                    "floating-point (real or complex) arrays."
                )
            paths.append(jax.tree_util.keystr(path))
            shapes.append(tuple(int(s) for s in leaf.shape))
            dtypes.append(jnp.dtype(dtype).name)
        if not paths:
            raise ValueError(f"{name} has no array leaves; pass an array (or jax.ShapeDtypeStruct) like the operator's input.")
        return Space(jax.tree_util.tree_structure(tree), tuple(paths), tuple(shapes), tuple(dtypes))

    @property
    def k(self) -> int:
        return len(self.paths)

    def low_dtype(self):
        return min((jnp.dtype(d) for d in self.dtypes), key=lambda d: jnp.finfo(d).bits)

    def size(self) -> int:
        """Real entries of one element (complex leaves count twice)."""
        return sum(
            int(np.prod(s, dtype=int)) * (2 if jnp.issubdtype(d, jnp.complexfloating) else 1)
            for s, d in zip(self.shapes, self.dtypes, strict=True)
        )

    def signs(self, bits: jax.Array, batch: int) -> list[jax.Array]:
        """Per leaf (batch, *shape) random signs from `bits` (batch, size()) (complex: re and im each
        ±1): unit variance, E[(xᵀFy)²] = ‖F‖_F², and |⟨e, y⟩| ≤ 6‖e‖ but for a 3e-8 chance (Hoeffding)."""
        out, at = [], 0
        for s, d in zip(self.shapes, self.dtypes, strict=True):
            n = int(np.prod(s, dtype=int))
            real = jnp.finfo(d).dtype
            sign = lambda b, real=real, s=s: (1 - 2 * (b >> 31).astype(real)).reshape((batch,) + s)  # noqa: E731
            if jnp.issubdtype(d, jnp.complexfloating):
                out.append((sign(bits[:, at : at + n]) + 1j * sign(bits[:, at + n : at + 2 * n])).astype(d))
                at += 2 * n
            else:
                out.append(sign(bits[:, at : at + n]))
                at += n
        return out

    def tree(self, leaves):
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def leaves(self, tree, name: str, like: str) -> list:
        """The leaves of a returned pytree, checked against this space."""
        try:
            leaves = self.treedef.flatten_up_to(tree)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{name} returned a pytree whose structure differs from {like}: expected {self.treedef}, "
                f"received {jax.tree_util.tree_structure(tree)}."
            ) from e
        for leaf, path, shape, dtype in zip(leaves, self.paths, self.shapes, self.dtypes, strict=True):
            got_shape, got_dtype = tuple(getattr(leaf, "shape", ())), getattr(leaf, "dtype", None)
            if got_dtype is None:
                raise TypeError(f"{name} output{path} is {type(leaf).__name__}; expected an array of shape {shape}.")
            if got_shape != shape:
                raise ValueError(f"{name} output{path}: shape {got_shape} != {like} shape {shape}.")
            if jnp.dtype(got_dtype).name != dtype:
                raise TypeError(f"{name} output{path}: dtype {jnp.dtype(got_dtype).name} != {like} dtype {dtype}.")
        return leaves


def _unwrap_transpose(out, space: Space):
    """`jax.linear_transpose(A, x)` returns a 1-tuple; accept it where x is not a tuple."""
    if isinstance(out, tuple) and len(out) == 1 and space.treedef != jax.tree_util.tree_structure((0,)):
        try:
            space.treedef.flatten_up_to(out[0])  # type: ignore[attr-defined]
            return out[0]
        except (ValueError, TypeError):
            return out
    return out


# ---------------------------------------------------------------- the measurement


def _apply(op, name, space_in: Space, space_out: Space, inputs: list[jax.Array], like: str):
    """op on a batch of inputs (leaves with one leading batch axis) → output leaves (batch, size)."""

    def one(*leaves):
        out = _validate.trace(name, op, space_in.tree(list(leaves)))
        if name == "AT":
            out = _unwrap_transpose(out, space_out)
        return [jnp.reshape(x, (-1,)) for x in space_out.leaves(out, name, like)]

    return jax.vmap(one)(*inputs)


def _pair(xp, a, b, conjugate: bool):
    """(⟨a, b⟩, its rounding bound) on the last axis: Re Σ aᵢbᵢ (JAX's transpose), or Re Σ conj(aᵢ)bᵢ."""
    if not conjugate and jnp.issubdtype(b.dtype, jnp.complexfloating):
        b = xp.conj(b)
    return _rounding.dot(_rounding.real_view(a, xp), _rounding.real_view(b, xp), xp)


def _inputs(space: Space, v, z, nblocks: int, blocks: bool):
    """Per leaf (pair·block·part, *shape): the parts v, v₁ = (v + z)/2, v − v₁ of each pair,
    restricted to the block (the leaf itself with `blocks`, every leaf without)."""
    out = []
    for li in range(space.k):
        half = 0.5 * (v[li] + z[li])
        parts = jnp.stack([v[li], half, v[li] - half], axis=1)  # (pair, 3, *shape)
        keep = (np.arange(nblocks) == li) if blocks else np.ones(nblocks, bool)
        mask = jnp.asarray(keep).reshape((1, nblocks, 1) + (1,) * len(space.shapes[li]))
        rows = jnp.where(mask, parts[:, None], jnp.zeros((), parts.dtype))  # (pair, block, 3, *shape)
        out.append(rows.reshape((-1,) + space.shapes[li]))
    return out


def _side(xp, outs, vs, leaves_of_block, nb_out, conjugate, first: bool):
    """Inner products and sizes of one side, for every (block of the input, leaf group of the output).

    outs: per output leaf (pair, nb_in, 3, m); vs: per output leaf the random vector (pair, m).
    Returns per output block: dot (pair, nb_in), its bound, Σ|out|² of the 3 parts (pair, nb_in, 3).
    """
    dots, bounds, sizes, resid = [], [], [], []
    for b in range(nb_out):
        leaves = leaves_of_block(b)
        o = xp.concatenate([_rounding.real_view(outs[leaf], xp) for leaf in leaves], axis=-1)  # (pair, nb_in, 3, m')
        v = xp.concatenate([vs[leaf] for leaf in leaves], axis=-1)  # (pair, m), complex kept
        full = xp.concatenate([outs[leaf][:, :, 0] for leaf in leaves], axis=-1)
        vv = xp.broadcast_to(v[:, None], full.shape)
        d, e = _pair(xp, full, vv, conjugate) if first else _pair(xp, vv, full, conjugate)
        dots.append(d)
        bounds.append(e)
        sizes.append(_rounding.pairwise_sum(o * o, xp))
        r = o[:, :, 0] - o[:, :, 1] - o[:, :, 2]
        resid.append(_rounding.pairwise_sum(r * r, xp))
    return [xp.stack(x, axis=-1) for x in (dots, bounds, sizes, resid)]  # (pair, nb_in, [3,] nb_out)


@dataclasses.dataclass(frozen=True)
class _Evaluate:
    """`evaluate` as a cacheable program: the operators as `_jit.Ref`s, the static configuration."""

    A: _jit.Ref
    AT: _jit.Ref
    xs: Space
    ys: Space
    num_pairs: int
    blocks: bool

    def __call__(self, key):
        return evaluate(self.A(), self.AT(), self.xs, self.ys, key, self.num_pairs, self.blocks)


def evaluate(A, AT, xs: Space, ys: Space, key, num_pairs: int, blocks: bool):
    """Everything that calls the operators, in one program: the random pairs (flat per leaf,
    (pair, size)) and the operators' outputs per leaf (pair, block, part, size)."""
    bx, by = (xs.k, ys.k) if blocks else (1, 1)
    bits = _signs.bits(key, (2 * num_pairs, xs.size() + ys.size()))  # one draw for everything
    x2, y2 = xs.signs(bits[:, : xs.size()], 2 * num_pairs), ys.signs(bits[:, xs.size() :], 2 * num_pairs)
    x, zx = [v[:num_pairs] for v in x2], [v[num_pairs:] for v in x2]  # per leaf (pair, *shape)
    y, zy = [v[:num_pairs] for v in y2], [v[num_pairs:] for v in y2]
    out_A = [o.reshape(num_pairs, bx, 3, -1) for o in _apply(A, "A", xs, ys, _inputs(xs, x, zx, bx, blocks), "y_like")]
    out_AT = [o.reshape(num_pairs, by, 3, -1) for o in _apply(AT, "AT", ys, xs, _inputs(ys, y, zy, by, blocks), "x_like")]
    return [v.reshape(num_pairs, -1) for v in x], [v.reshape(num_pairs, -1) for v in y], out_A, out_AT


def statistics(xp, xs: Space, ys: Space, x_flat, y_flat, out_A, out_AT, blocks: bool, conjugate: bool):
    """Per pair and block: (D, S, bound) with shape (pair, x block, y block), and per block the
    measured rounding levels of A and AT (x block, y block). NumPy or jax.numpy (`xp`)."""
    bx, by = (xs.k, ys.k) if blocks else (1, 1)
    y_block = (lambda b: [b]) if blocks else (lambda b: list(range(ys.k)))
    x_block = (lambda b: [b]) if blocks else (lambda b: list(range(xs.k)))
    # ⟨A x_i, y_o⟩: (pair, bx, by); ⟨x_i, AT y_o⟩: computed as (pair, by, bx), transposed
    a, ea, size_A, res_A = _side(xp, out_A, y_flat, y_block, by, conjugate, True)
    b, eb, size_T, res_T = _side(xp, out_AT, x_flat, x_block, bx, conjugate, False)
    b, eb = xp.swapaxes(b, 1, 2), xp.swapaxes(eb, 1, 2)
    size_T, res_T = xp.swapaxes(size_T, 1, 3), xp.swapaxes(res_T, 1, 2)  # (pair, bx, 3, by), (pair, bx, by)
    size_T = xp.swapaxes(size_T, 2, 3)  # (pair, bx, by, 3)
    size_A = xp.swapaxes(size_A, 2, 3)  # (pair, bx, by, 3)
    u_x = _rounding.unit_roundoff(xs.low_dtype())
    u_y = _rounding.unit_roundoff(ys.low_dtype())

    def level(res, size, u):
        den = xp.sqrt(xp.sum(size, axis=-1))
        lv = xp.where(den > 0, xp.sqrt(res) / xp.where(den > 0, den, 1), 0.0)
        return xp.maximum(xp.max(lv, axis=0), u)  # the largest over the pairs, at least one rounding

    rho_A, rho_AT = level(res_A, size_A, u_y), level(res_T, size_T, u_x)
    nA, nT = xp.sqrt(size_A[..., 0]), xp.sqrt(size_T[..., 0])
    D = a - b
    u = max(u_x, u_y)
    bound = KG * KR * (rho_A[None] * nA + rho_AT[None] * nT) + ea + eb + u * (xp.abs(a) + xp.abs(b))
    return D, 0.5 * (nA + nT), bound, rho_A, rho_AT


def verdict(xp, D, S, bound, tol):
    failed_blocks = _block_failed(D, S, bound, tol)
    upper = _ratio(xp.abs(D) + bound, S)
    passed_blocks = xp.all(upper <= tol, axis=0) & ~failed_blocks
    failed = xp.any(failed_blocks)
    passed = xp.all(passed_blocks) & ~failed
    num = xp.sqrt(xp.sum(xp.where(xp.isfinite(D), D, xp.inf) ** 2))
    den = xp.sqrt(xp.sum(S**2))
    return passed, failed, _ratio(num, den)


# ---------------------------------------------------------------- the check


def check_adjoint(
    A: Callable[[PyTree], PyTree],
    AT: Callable[[PyTree], PyTree],
    x_like: PyTree,
    y_like: PyTree,
    *,
    key: jax.Array,
    num_pairs: int = 8,
    tol: float | None = None,
    blocks: bool = False,
    conjugate: bool = False,
) -> AdjointCheck:
    """The dot-product test of a linear map `A` and its hand-written adjoint `AT`.

    For `num_pairs` random pairs (x, y), ⟨A x, y⟩ is compared with ⟨x, AT y⟩; the
    mismatch is judged against a rounding bound built from the pairwise-summed inner
    products and the operators' measured rounding (see `jgc/_adjoint.py`), relative to
    the spread S = (‖A x‖ + ‖AT y‖)/2 of the inner product, so the relative mismatch
    estimates ‖AT − Aᵀ‖_F / ‖A‖_F. Matrix-free operators on any pytrees; `AT` may be
    `jax.linear_transpose(A, x_like)` (its 1-tuple is unwrapped). Pure: works under
    `jax.jit` and `jax.vmap` (vmap over keys for more pairs).

    Args:
      A: the linear map, `A(x) -> y` (pytrees of real or complex floating-point arrays).
      AT: its adjoint under test, `AT(y) -> x`.
      x_like, y_like: arrays or `jax.ShapeDtypeStruct`s like A's input and output.
      key: PRNG key for the random pairs.
      num_pairs: how many pairs (A and AT are each evaluated 3 times per pair and block).
      tol: the relative mismatch a pass guarantees; None: 1e-9 (float64), 1e-3 (float32),
        from the lowest precision among x and y.
      blocks: test each (leaf of x, leaf of y) block on its own and name the wrong ones.
      conjugate: the Hermitian adjoint (Re Σ conj(aᵢ)bᵢ) instead of JAX's transpose
        convention (Re Σ aᵢbᵢ, what `jax.linear_transpose` and VJPs satisfy); the same
        for real arrays.

    Returns:
      A `jgc.AdjointCheck`.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> M = jnp.arange(6.0).reshape(2, 3)
      >>> res = jgc.check_adjoint(lambda x: M @ x, lambda y: M.T @ y, jnp.zeros(3), jnp.zeros(2), key=jax.random.key(0))
      >>> bool(res.passed)
      True
      >>> bool(jgc.check_adjoint(lambda x: M @ x, lambda y: 2 * M.T @ y, jnp.zeros(3), jnp.zeros(2), key=jax.random.key(0)).failed)
      True
    """
    _validate.callable_("A", A)
    _validate.callable_("AT", AT)
    _validate.key(key)
    _validate.count("num_pairs", num_pairs)
    _validate.flag("blocks", blocks)
    _validate.flag("conjugate", conjugate)
    _validate.positive("tol", tol)
    xs, ys = Space.of(x_like, "x_like"), Space.of(y_like, "y_like")
    # shapes first, with messages naming the operator and the leaf
    x0 = xs.tree([jax.ShapeDtypeStruct(s, d) for s, d in zip(xs.shapes, xs.dtypes, strict=True)])
    y0 = ys.tree([jax.ShapeDtypeStruct(s, d) for s, d in zip(ys.shapes, ys.dtypes, strict=True)])
    ys.leaves(jax.eval_shape(lambda v: _validate.trace("A", A, v), x0), "A", "y_like")
    xs.leaves(_unwrap_transpose(jax.eval_shape(lambda v: _validate.trace("AT", AT, v), y0), xs), "AT", "x_like")
    low = min(xs.low_dtype(), ys.low_dtype(), key=lambda d: jnp.finfo(d).bits)
    tol_value = default_tol(low) if tol is None else tol
    real_low = jnp.finfo(low).dtype

    def decide(xp, evaluated, tol):
        D, S, bound, rho_A, rho_AT = statistics(xp, xs, ys, *evaluated, blocks, conjugate)
        tol = xp.asarray(tol, real_low)
        passed, failed, rel = verdict(xp, D, S, bound, tol)
        return AdjointCheck(passed, failed, rel, tol, D, S, bound, rho_A, rho_AT, 0, 0, (), (), "")

    run = _Evaluate(_jit.Ref(A), _jit.Ref(AT), xs, ys, num_pairs, blocks)
    traced = isinstance(key, Tracer) or isinstance(tol_value, Tracer)
    # the operators in one compiled program, cached on them: a second call compiles nothing
    evaluated = None if traced else _jit.program(("check_adjoint", run), run)(key)
    if traced or any(isinstance(v, Tracer) for v in jax.tree_util.tree_leaves(evaluated)):
        # under the caller's trace (or operators that close over it): one jit, so that a vmap
        # over the check compiles once
        res = jax.jit(lambda k, t: decide(jnp, run(k), t))(key, tol_value)
    else:  # the statistics on the host
        with np.errstate(all="ignore"):
            res = decide(np, jax.tree_util.tree_map(np.asarray, evaluated), tol_value)
    bx, by = (xs.k, ys.k) if blocks else (1, 1)
    return dataclasses.replace(
        res,
        num_evals_A=3 * num_pairs * bx,
        num_evals_AT=3 * num_pairs * by,
        x_paths=xs.paths if blocks else ("",),
        y_paths=ys.paths if blocks else ("",),
        dtype=jnp.dtype(low).name,
    )
