"""check_rule: a function's custom JVP and/or VJP rule, on every input and output.

A composition of the public checks, so the verdict is theirs:

- the JVP rule (`jax.jvp` of f) through `jgc.check_jvp`: random tangents on each input leaf,
  finite differences of f, one row per (output leaf, input leaf);
- the VJP rule (`jax.vjp` of f), where f has no JVP (a `custom_vjp`), through `jgc.check_vjp`:
  per output leaf (a cotangent on that output only), so a failure names the input and the
  output;
- where both exist, the VJP through `jgc.check_adjoint(jvp, vjp, blocks=True)`: ⟨u, J v⟩ from
  the JVP (already checked by finite differences) equals ⟨Jᵀu, v⟩ from the VJP, block by
  block, against a proven rounding bound — exact, so the VJP needs no finite differences of
  its own;

plus the checks that need no finite differences, each a relative difference
‖a − b‖ / (‖a‖ + ‖b‖) that is an identity in exact arithmetic, failed beyond `tol`:

- the primal output of the rules (`jax.jvp(f)[0]`, `jax.vjp(f)[0]`) against f itself;
- zero cotangents (and zero tangents) give exactly zero;
- symbolic-zero cotangents: the VJP of one output alone (JAX passes zeros, or `SymbolicZero`s,
  for the unused outputs) equals the full VJP with a zero cotangent on the others;
- the rules under `jax.vmap` against a loop (`lax.map`) over a batch of nearby primals, per
  (input, output) pair: a batching rule that is wrong only when batched.

Integer and boolean inputs get `float0` tangents and cotangents and are listed as not
checked, as are non-floating-point outputs and, with `has_aux=True`, the auxiliary output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _signs, _tree, _validate
from ._adjoint import AdjointCheck, check_adjoint, xp_of
from ._report_rules import Outcome
from ._typing import Array, PyTree, Tracer

_TOL = {"float64": 1e-6, "float32": 1e-3}
VMAP_BATCH = 3  # primals in the vmap-vs-loop batch
VMAP_SPREAD = 0.05  # the batch's primals: θ + 5% of each leaf's rms in random directions


# ---------------------------------------------------------------- the structure of f


def _is_float(x) -> bool:
    return _tree.is_array(x) and not _tree.is_key(x) and jnp.issubdtype(x.dtype, jnp.floating)


def _is_float_shape(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and not jnp.issubdtype(dtype, jax.dtypes.prng_key) and jnp.issubdtype(dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static: which input and output leaves are checked, and how f's output is reduced to them."""

    in_treedef: object
    in_paths: tuple[str, ...]  # checked input leaves, e.g. "[0]['W']"
    in_index: tuple[int, ...]  # their positions among the primals' leaves
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[str, ...]
    in_leaves: int
    unchecked_in: tuple[tuple[str, str], ...]  # (path, why)
    out_treedef: object  # of f's output (without aux)
    out_paths: tuple[str, ...]
    out_index: tuple[int, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[str, ...]
    out_leaves: int
    unchecked_out: tuple[tuple[str, str], ...]
    has_aux: bool

    @property
    def n_in(self) -> int:
        return len(self.in_paths)

    @property
    def n_out(self) -> int:
        return len(self.out_paths)

    @property
    def dtype(self):
        dts = [jnp.dtype(d) for d in self.in_dtypes + self.out_dtypes]
        return min(dts, key=lambda d: d.itemsize)


def _spec(f, primals: tuple, has_aux: bool) -> Spec:
    keyed, in_treedef = jax.tree_util.tree_flatten_with_path(primals)
    in_paths, in_index, in_shapes, in_dtypes, unchecked_in = [], [], [], [], []
    for i, (path, leaf) in enumerate(keyed):
        p = jax.tree_util.keystr(path)
        if not _tree.is_array(leaf):
            raise TypeError(
                f"primals{p} is {type(leaf).__name__}; check_rule differentiates f, so every primal leaf must be an "
                "array (close over static values in f instead)."
            )
        if _is_float(leaf):
            if jnp.dtype(leaf.dtype) in (jnp.float16, jnp.bfloat16):
                raise TypeError(f"primals{p} has dtype {jnp.dtype(leaf.dtype).name}; cast it to float32 or float64 first.")
            in_paths.append(p)
            in_index.append(i)
            in_shapes.append(tuple(int(s) for s in leaf.shape))
            in_dtypes.append(jnp.dtype(leaf.dtype).name)
        else:
            unchecked_in.append((p, f"{_tree.dtype_name(leaf)}: float0 tangent and cotangent, not checked"))
    if not in_paths:
        raise ValueError(
            "check_rule needs at least one floating-point primal; received only " + ", ".join(p for p, _ in unchecked_in)
        )
    out = jax.eval_shape(lambda *p: _validate.trace("f", f, *p), *primals)
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError(f"has_aux=True: f must return a pair (output, aux); received {jax.tree_util.tree_structure(out)}.")
        out = out[0]
    keyed_out, out_treedef = jax.tree_util.tree_flatten_with_path(out)
    out_paths, out_index, out_shapes, out_dtypes, unchecked_out = [], [], [], [], []
    for i, (path, leaf) in enumerate(keyed_out):
        p = jax.tree_util.keystr(path)
        if _is_float_shape(leaf):
            out_paths.append(p)
            out_index.append(i)
            out_shapes.append(tuple(int(s) for s in leaf.shape))
            out_dtypes.append(jnp.dtype(leaf.dtype).name)
        else:
            name = getattr(getattr(leaf, "dtype", None), "name", type(leaf).__name__)
            unchecked_out.append((p, f"{name}: not differentiable, not checked"))
    if not out_paths:
        raise ValueError("f has no floating-point output to check.")
    if has_aux:
        unchecked_out.append(("aux", "has_aux: left out of the check"))
    return Spec(
        in_treedef,
        tuple(in_paths),
        tuple(in_index),
        tuple(in_shapes),
        tuple(in_dtypes),
        len(keyed),
        tuple(unchecked_in),
        out_treedef,
        tuple(out_paths),
        tuple(out_index),
        tuple(out_shapes),
        tuple(out_dtypes),
        len(keyed_out),
        tuple(unchecked_out),
        has_aux,
    )


# ---------------------------------------------------------------- f, its rules, restricted to the checked leaves


@dataclasses.dataclass(frozen=True)
class Rules:
    """f (held as a `_jit.Ref`, so the programs of its checks are cached on it) and its structure."""

    f: _jit.Ref
    spec: Spec

    def out(self, *primals):
        """f's output with its unchecked leaves (and aux) replaced by None."""
        y = _validate.trace("f", self.f(), *primals)
        if self.spec.has_aux:
            y = y[0]
        leaves = self.spec.out_treedef.flatten_up_to(y)  # type: ignore[attr-defined]
        keep = set(self.spec.out_index)
        return jax.tree_util.tree_unflatten(self.spec.out_treedef, [v if i in keep else None for i, v in enumerate(leaves)])

    def out_leaves(self, y) -> list:
        return jax.tree_util.tree_leaves(y)

    def tangents(self, primals, float_tangents: list):
        """A tangent pytree like the primals: the given arrays on checked leaves, float0 zeros elsewhere."""
        leaves = self.spec.in_treedef.flatten_up_to(primals)  # type: ignore[attr-defined]
        out = [np.zeros(np.shape(v), jax.dtypes.float0) for v in leaves]
        for k, i in enumerate(self.spec.in_index):
            out[i] = float_tangents[k]
        return jax.tree_util.tree_unflatten(self.spec.in_treedef, out)

    def cotangent(self, out_cts: list):
        """A cotangent like `out`: the given arrays on checked output leaves (None elsewhere)."""
        leaves: list = [None] * self.spec.out_leaves
        for k, i in enumerate(self.spec.out_index):
            leaves[i] = out_cts[k]
        return jax.tree_util.tree_unflatten(self.spec.out_treedef, leaves)

    def float_in(self, tree) -> list:
        leaves = self.spec.in_treedef.flatten_up_to(tree)  # type: ignore[attr-defined]
        return [leaves[i] for i in self.spec.in_index]

    def jvp(self, primals, float_tangents: list):
        """(primal output, tangent output leaves) of the JVP rule."""
        y, t = jax.jvp(self.out, tuple(primals), tuple(self.tangents(primals, float_tangents)))
        return y, self.out_leaves(t)

    def vjp(self, primals, out_cts: list):
        """(primal output, cotangents of the checked input leaves) of the VJP rule."""
        y, pullback = jax.vjp(self.out, *primals)
        cts = pullback(self.cotangent(out_cts))
        return y, self.float_in(tuple(cts))

    def vjp_one(self, primals, o: int, ct):
        """The VJP of output leaf o alone: JAX gives the rule zero (symbolic) cotangents elsewhere."""
        y, pullback = jax.vjp(lambda *p: self.out_leaves(self.out(*p))[o], *primals)
        return self.float_in(tuple(pullback(ct)))


def _zeros(shapes, dtypes):
    return [jnp.zeros(s, d) for s, d in zip(shapes, dtypes, strict=True)]


def _random(key, shapes, dtypes, salt: int):
    return [_signs.signs(key, s, d, salt=salt + i) for i, (s, d) in enumerate(zip(shapes, dtypes, strict=True))]


def _available(rules: Rules, primals) -> tuple[str, str]:
    """Why the JVP / the VJP cannot be evaluated ("" when it can)."""
    spec = rules.spec

    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), primals)

    def reason(fn):
        # lowered, not only traced: a custom_vjp refuses forward mode only when lowered
        try:
            jax.jit(fn).lower(shapes)
            return ""
        except _validate.Untraceable:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure to form the rule means "no such rule"
            text = str(e).strip().splitlines()
            return f"{type(e).__name__}: {text[0][:160] if text else ''}"

    jvp = reason(lambda p: rules.jvp(p, _zeros(spec.in_shapes, spec.in_dtypes)))
    vjp = reason(lambda p: rules.vjp(p, _zeros(spec.out_shapes, spec.out_dtypes)))
    return jvp, vjp


# ---------------------------------------------------------------- the exact checks


def rel_diff(xp, a, b):
    """‖a − b‖ / (‖a‖ + ‖b‖) over the entries (0 when both are 0, inf where non-finite values differ)."""
    a, b = xp.asarray(a).reshape(-1), xp.asarray(b).reshape(-1)
    both = xp.isfinite(a) & xp.isfinite(b)
    bad = xp.any(~both & ~((a == b) & ~xp.isnan(a)))
    a0, b0 = xp.where(both, a, 0), xp.where(both, b, 0)
    num = xp.sqrt(xp.sum(xp.square(a0 - b0)))
    den = xp.sqrt(xp.sum(xp.square(a0))) + xp.sqrt(xp.sum(xp.square(b0)))
    rel = xp.where(den > 0, num / xp.where(den > 0, den, 1), 0.0)
    return xp.where(bad, xp.inf, rel)


def _max_abs(xp, x):
    x = xp.asarray(x).reshape(-1)
    return xp.where(xp.all(xp.isfinite(x)), xp.max(xp.abs(x), initial=0.0), xp.inf)


def evaluate(rules: Rules, primals, key, has_jvp: bool, has_vjp: bool) -> dict:
    """Everything the exact checks evaluate, in one program: lists of arrays to compare."""
    spec = rules.spec
    raw: dict = {"y": rules.out_leaves(rules.out(*primals))}
    if has_jvp:
        raw["y_jvp"], raw["jvp_zero"] = rules.jvp(primals, _zeros(spec.in_shapes, spec.in_dtypes))
        raw["y_jvp"] = rules.out_leaves(raw["y_jvp"])
    if has_vjp:
        raw["y_vjp"], raw["vjp_zero"] = rules.vjp(primals, _zeros(spec.out_shapes, spec.out_dtypes))
        raw["y_vjp"] = rules.out_leaves(raw["y_vjp"])
    # symbolic zeros: output o alone against the full VJP with zeros on the other outputs
    if has_vjp and spec.n_out > 1:
        cts = _random(key, spec.out_shapes, spec.out_dtypes, 1000)
        raw["alone"], raw["full"] = [], []
        for o in range(spec.n_out):
            raw["alone"].append(rules.vjp_one(primals, o, cts[o]))
            raw["full"].append(rules.vjp(primals, [c if j == o else jnp.zeros_like(c) for j, c in enumerate(cts)])[1])
    # the rules under vmap against a loop (lax.map), over a batch of nearby primals; for the
    # rules, per leaf a batch whose tangents (cotangents) are on that leaf only, so that a pair's
    # error is localised
    batch = _batch(spec, primals, key)
    raw["vm_f"] = (rules.out_leaves(jax.vmap(rules.out)(*batch)), rules.out_leaves(jax.lax.map(lambda p: rules.out(*p), batch)))
    if has_jvp:
        raw["vm_jvp"] = _vmap_vs_loop(lambda p, ts: rules.jvp(p, ts)[1], batch, key, 3000, spec.in_shapes, spec.in_dtypes)
    if has_vjp:
        raw["vm_vjp"] = _vmap_vs_loop(lambda p, cs: rules.vjp(p, cs)[1], batch, key, 4000, spec.out_shapes, spec.out_dtypes)
    return raw


def compare(xp, raw: dict, spec: Spec) -> dict:
    """The exact checks' relative differences from `evaluate`'s arrays (NaN where a check does not apply)."""
    n_in, n_out = spec.n_in, spec.n_out
    nan_out, nan_io = xp.full((n_out,), xp.nan), xp.full((n_in, n_out), xp.nan)
    y = raw["y"]
    rel = lambda a, b: xp.stack([rel_diff(xp, u, v) for u, v in zip(a, b, strict=True)])  # noqa: E731
    primal_jvp = rel(raw["y_jvp"], y) if "y_jvp" in raw else nan_out
    primal_vjp = rel(raw["y_vjp"], y) if "y_vjp" in raw else nan_out
    zero_jvp = xp.stack([_max_abs(xp, t) for t in raw["jvp_zero"]]) if "jvp_zero" in raw else nan_out
    zero_vjp = xp.stack([_max_abs(xp, c) for c in raw["vjp_zero"]]) if "vjp_zero" in raw else xp.full((n_in,), xp.nan)
    symbolic = xp.stack([rel(a, f) for a, f in zip(raw["alone"], raw["full"], strict=True)], axis=1) if "alone" in raw else nan_io

    def per_leaf(pairs):
        return xp.stack([rel(a, b) for a, b in pairs])  # (leaf of the vectors, leaf of the results)

    vm_jvp = per_leaf(raw["vm_jvp"]) if "vm_jvp" in raw else nan_io
    vm_vjp = per_leaf(raw["vm_vjp"]).T if "vm_vjp" in raw else nan_io
    return dict(
        primal_error=xp.stack([primal_jvp, primal_vjp], axis=1),
        zero_jvp=zero_jvp,
        zero_vjp=zero_vjp,
        symbolic_error=symbolic,
        vmap_primal=rel(*raw["vm_f"]),
        vmap_jvp=vm_jvp,
        vmap_vjp=vm_vjp,
    )


def _vmap_vs_loop(fn, batch, key, salt: int, shapes, dtypes):
    """Per leaf j, (vmap, lax.map) of fn(primals, vectors) over the batch with vectors nonzero on
    leaf j only. One vmap per leaf: a batching rule that mixes the batch's elements must not
    leak one leaf's vectors into another's results."""
    out = []
    for j, (s, d) in enumerate(zip(shapes, dtypes, strict=True)):
        vectors = [jnp.zeros((VMAP_BATCH,) + sh, dt) for sh, dt in zip(shapes, dtypes, strict=True)]
        vectors[j] = _signs.signs(key, (VMAP_BATCH,) + s, d, salt=salt + j)
        out.append((jax.vmap(fn)(batch, vectors), jax.lax.map(lambda pv: fn(*pv), (batch, vectors))))
    return out


def _batch(spec: Spec, primals, key):
    """VMAP_BATCH primals: the given ones, then float leaves moved by VMAP_SPREAD of their rms."""
    leaves = list(spec.in_treedef.flatten_up_to(primals))  # type: ignore[attr-defined]
    out = []
    checked = dict(zip(spec.in_index, range(spec.n_in), strict=True))
    for i, v in enumerate(leaves):
        v = jnp.asarray(v)
        if i in checked:
            rms = jnp.sqrt(jnp.mean(jnp.square(v))) if v.size else jnp.zeros((), v.dtype)
            scale = VMAP_SPREAD * jnp.where(rms > 0, rms, 1.0)
            z = _signs.signs(key, (VMAP_BATCH - 1,) + v.shape, v.dtype, salt=2000 + i)
            out.append(jnp.concatenate([v[None], v[None] + scale.astype(v.dtype) * z]))
        else:
            out.append(jnp.broadcast_to(v[None], (VMAP_BATCH,) + v.shape))
    return tuple(jax.tree_util.tree_unflatten(spec.in_treedef, out))


# ---------------------------------------------------------------- the result


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class RuleCheck(Outcome):
    """The outcome of `jgc.check_rule`: the sub-checks' results and the exact checks' arrays.

    Per-pair arrays are (input leaf, output leaf); NaN marks a check that does not apply.
    Every array gains leading batch axes under `jax.vmap`.

    Attributes:
      jvp: the `jgc.JVPCheck` of the JVP rule (None when f has none).
      vjp: `jgc.VJPCheck`s of the VJP rule: one per output leaf (`vjp_per_output`) or one
        for all outputs; () when f has no VJP.
      adjoint: the `jgc.AdjointCheck` of the JVP/VJP pair (None unless both exist).
      primal_error: (output, 2) the rules' primal outputs (JVP, VJP) against f.
      zero_jvp, zero_vjp: max |JVP(0)| per output, |VJP(0)| per input (exactly 0 when right).
      symbolic_error: VJP of each output alone (symbolic zeros elsewhere) vs the full VJP.
      vmap_primal, vmap_jvp, vmap_vjp: under `jax.vmap` vs a loop.
      tol: the relative difference allowed in the exact checks.
      in_paths, out_paths: the checked leaves ("[0]['W']", "['y']"); unchecked_in,
        unchecked_out: (path, why) of the others.
      jvp_missing, vjp_missing: why a rule could not be evaluated ("" when it could).
    """

    jvp: object
    vjp: tuple
    adjoint: AdjointCheck | None
    primal_error: Array
    zero_jvp: Array
    zero_vjp: Array
    symbolic_error: Array
    vmap_primal: Array
    vmap_jvp: Array
    vmap_vjp: Array
    tol: Array
    in_paths: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    out_paths: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    unchecked_in: tuple = dataclasses.field(metadata=dict(static=True))
    unchecked_out: tuple = dataclasses.field(metadata=dict(static=True))
    jvp_missing: str = dataclasses.field(metadata=dict(static=True))
    vjp_missing: str = dataclasses.field(metadata=dict(static=True))
    vjp_per_output: bool = dataclasses.field(metadata=dict(static=True))

    kind: ClassVar[str] = "check_rule"

    # ------------------------------------------------------------ per pair

    @property
    def _np(self):
        """NumPy for a result of concrete inputs, jax.numpy under a trace."""
        return xp_of(self.tol, self.primal_error, self.vmap_jvp)

    def _jvp_pair(self, field: str):
        """(in, out) array of a per-leaf field of the JVP check ("failed"/"passed")."""
        assert self.jvp is not None
        res = self.jvp
        values = jax.tree_util.tree_leaves(res.leaf_failed if field == "failed" else res.leaf_passed)
        paths = res.layout.paths
        rows = []
        for i, ip in enumerate(self.in_paths):
            row = []
            for o, op in enumerate(self.out_paths):
                name = op if len(self.in_paths) == 1 else f"out{op} ← {ip}"
                k = paths.index(name) if name in paths else i * len(self.out_paths) + o
                row.append(self._np.asarray(values[k]))
            rows.append(self._np.stack(row, axis=-1))
        return self._np.stack(rows, axis=-2)

    def _vjp_pair(self, field: str):
        cols = []
        for o in range(len(self.out_paths)):
            res = self.vjp[o] if self.vjp_per_output else self.vjp[0]
            values = jax.tree_util.tree_leaves(res.leaf_failed if field == "failed" else res.leaf_passed)
            paths = res.layout.paths
            cols.append(self._np.stack([self._np.asarray(values[paths.index(p)]) for p in self.in_paths], axis=-1))
        return self._np.stack(cols, axis=-1)

    def _exceeds(self, x):
        tol = self._np.reshape(self.tol, self._np.shape(self.tol) + (1,) * (self._np.ndim(x) - self._np.ndim(self.tol)))
        return ~self._np.isnan(x) & ~(x <= tol)

    @property
    def pair_failed(self) -> jax.Array:
        """bool (…, input leaf, output leaf): some check of that pair failed."""
        shape = self._np.shape(self.tol) + (len(self.in_paths), len(self.out_paths))
        bad = self._np.zeros(shape, bool)
        if self.jvp is not None:
            bad = bad | self._jvp_pair("failed")
        if self.vjp and self.vjp_per_output:
            bad = bad | self._vjp_pair("failed")
        if self.adjoint is not None:
            bad = bad | self.adjoint.block_failed
        for x in (self.symbolic_error, self.vmap_jvp, self.vmap_vjp):
            bad = bad | self._exceeds(x)
        return bad

    @property
    def input_failed(self) -> jax.Array:
        """bool (…, input leaf): a pair of it failed, its VJP failed, or VJP(0) ≠ 0."""
        bad = self._np.any(self.pair_failed, axis=-1) | self._exceeds_zero(self.zero_vjp)
        if self.vjp and not self.vjp_per_output:
            bad = bad | self._np.all(self._vjp_pair("failed"), axis=-1)
        return bad

    @property
    def output_failed(self) -> jax.Array:
        """bool (…, output leaf): a pair of it failed, its primal output, JVP(0) or vmap primal."""
        bad = self._np.any(self.pair_failed, axis=-2) | self._exceeds_zero(self.zero_jvp) | self._exceeds(self.vmap_primal)
        return bad | self._np.any(self._exceeds(self.primal_error), axis=-1)

    def _exceeds_zero(self, x):
        return ~self._np.isnan(x) & (x != 0)

    def _subchecks(self):
        return [r for r in (self.jvp, *self.vjp, self.adjoint) if r is not None]

    @property
    def failed(self) -> jax.Array:
        bad = self._np.any(self.input_failed, axis=-1) | self._np.any(self.output_failed, axis=-1)
        for r in self._subchecks():
            bad = bad | r.failed
        return bad

    @property
    def passed(self) -> jax.Array:
        ok = ~self.failed
        for r in self._subchecks():
            ok = ok & r.passed
        return ok

    @property
    def num_evals(self) -> int:
        """f evaluations of the finite-difference sub-checks (host-side, unbatched)."""
        return int(sum(int(np.max(np.asarray(r.num_evals))) for r in (self.jvp, *self.vjp) if r is not None))


# ---------------------------------------------------------------- the check


def check_rule(
    f: Callable[..., PyTree],
    *primals,
    key: jax.Array,
    has_aux: bool = False,
    num_tangents: int = 2,
    num_pairs: int = 8,
    tol: float | None = None,
    eps: float | None = None,
    method: str = "central",
) -> RuleCheck:
    """Check a function's custom JVP and/or VJP rule on every input and output.

    Finite differences of f along random tangents judge the JVP (`jgc.check_jvp`) and,
    through random cotangents, the VJP (`jgc.check_vjp`, per output when there is no
    JVP); the dot-product test (`jgc.check_adjoint`) judges the pair; the rules' primal
    outputs, zero and symbolic-zero cotangents, and the rules under `jax.vmap` against a
    loop are compared exactly (see `jgc/_rules.py`). A row of the report is one (input
    leaf, output leaf) pair. Pure: works under `jax.jit` and `jax.vmap`.

    Args:
      f: the function with the rule, `f(*primals) -> pytree` (`(pytree, aux)` with has_aux).
      *primals: its inputs (pytrees of arrays); integer and boolean leaves are not
        differentiated (float0), and listed as not checked.
      key: PRNG key for tangents, cotangents and the vmap batch.
      has_aux: f returns (output, aux); aux is left out of every check.
      num_tangents: random tangents per input leaf in the JVP check.
      num_pairs: random pairs in the dot-product test.
      tol: the relative difference allowed in the exact checks (primal output, symbolic
        zeros, vmap vs loop); None: 1e-6 (float64), 1e-3 (float32). The finite-difference
        sub-checks use their own defaults.
      eps, method: passed to `jgc.check_jvp` and `jgc.check_vjp` (with tol=None).

    Returns:
      A `jgc.RuleCheck`.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> @jax.custom_jvp
      ... def softplus(x):
      ...     return jnp.logaddexp(x, 0.0)
      >>> @softplus.defjvp
      ... def softplus_jvp(p, t):
      ...     return softplus(p[0]), jax.nn.sigmoid(p[0]) * t[0]
      >>> bool(jgc.check_rule(softplus, jnp.linspace(-2.0, 2.0, 5), key=jax.random.key(0)).passed)
      True
    """
    _validate.callable_("f", f)
    _validate.key(key)
    _validate.flag("has_aux", has_aux)
    _validate.count("num_tangents", num_tangents)
    _validate.count("num_pairs", num_pairs)
    _validate.positive("tol", tol)
    if not primals:
        raise ValueError("no primals given: pass the inputs of f after it, e.g. jgc.check_rule(f, x, key=key).")
    primals = tuple(jax.tree_util.tree_map(lambda x: jnp.asarray(x) if isinstance(x, (int, float, bool)) else x, primals))
    options = dict(has_aux=has_aux, num_tangents=num_tangents, num_pairs=num_pairs, tol=tol, eps=eps, method=method)
    if any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves((primals, key))):
        # under the caller's trace: everything in one jit, so that a vmap over the check compiles once
        return jax.jit(lambda p, k: _check_rule(f, p, k, **options))(primals, key)
    return _check_rule(f, primals, key, **options)


def _check_rule(f, primals, key, *, has_aux, num_tangents, num_pairs, tol, eps, method) -> RuleCheck:
    spec = _spec(f, primals, has_aux)
    rules = Rules(_jit.Ref(f), spec)
    jvp_missing, vjp_missing = _available(rules, primals)
    has_jvp, has_vjp = not jvp_missing, not vjp_missing
    if not (has_jvp or has_vjp):
        raise ValueError(f"f has neither a JVP nor a VJP here: jax.jvp raised {jvp_missing}; jax.vjp raised {vjp_missing}.")
    k_jvp, k_vjp, k_adj, k_extra = jax.random.split(key, 4)
    out_fn = _Out(rules)

    jvp_res = None
    if has_jvp:
        from jgc import check_jvp  # the public check

        jvp_res = check_jvp(out_fn, _JVPTangent(rules), *primals, key=k_jvp, num_tangents=num_tangents, eps=eps, method=method)
    # the VJP by finite differences where there is no JVP (a custom_vjp), per output when there
    # are several so that a failure names the output; with a JVP, checked above by finite
    # differences, the exact identity ⟨u, J v⟩ = ⟨Jᵀu, v⟩ below decides the VJP block by block
    vjp_res: tuple = ()
    per_output = has_vjp and not has_jvp and spec.n_out > 1
    if has_vjp and not has_jvp:
        from jgc import check_vjp  # the public check

        if per_output:
            vjp_res = tuple(
                check_vjp(
                    _Output(rules, o), _OutputVJP(rules, o), *primals, key=jax.random.fold_in(k_vjp, o), eps=eps, method=method
                )
                for o in range(spec.n_out)
            )
        else:
            vjp_res = (check_vjp(out_fn, _VJPCotangent(rules), *primals, key=k_vjp, eps=eps, method=method),)
    adj = None
    if has_jvp and has_vjp:
        x_like = [jax.ShapeDtypeStruct(s, d) for s, d in zip(spec.in_shapes, spec.in_dtypes, strict=True)]
        y_like = [jax.ShapeDtypeStruct(s, d) for s, d in zip(spec.out_shapes, spec.out_dtypes, strict=True)]
        adj = check_adjoint(
            lambda t: rules.jvp(primals, list(t))[1],
            lambda c: rules.vjp(primals, list(c))[1],
            x_like,
            y_like,
            key=k_adj,
            num_pairs=num_pairs,
            blocks=True,
        )
    dtype = spec.dtype
    tol_value = _TOL.get(jnp.dtype(dtype).name, 1e-3) if tol is None else tol
    run = _Evaluate(rules, has_jvp, has_vjp)
    traced = any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves((primals, key)))
    # the rules in one compiled program, cached on f: a second call compiles nothing
    raw = None if traced else _jit.program(("check_rule", run), run)(primals, k_extra)
    host = not traced and not any(isinstance(v, Tracer) for v in jax.tree_util.tree_leaves(raw))  # f may close over tracers
    if not host:  # under the caller's trace: one jit, so that a vmap over the check compiles once
        ex = jax.jit(lambda p, k: compare(jnp, run(p, k), spec))(primals, k_extra)
    else:  # the comparisons on the host
        with np.errstate(all="ignore"):
            ex = compare(np, jax.tree_util.tree_map(np.asarray, raw), spec)
    return RuleCheck(
        jvp=jvp_res,
        vjp=vjp_res,
        adjoint=adj,
        tol=(np if host else jnp).asarray(tol_value, jnp.finfo(dtype).dtype),
        in_paths=spec.in_paths,
        out_paths=spec.out_paths,
        unchecked_in=spec.unchecked_in,
        unchecked_out=spec.unchecked_out,
        jvp_missing=jvp_missing,
        vjp_missing=vjp_missing,
        vjp_per_output=per_output,
        **ex,
    )


# The functions the sub-checks are given: dataclasses of `Rules` (equal for the same f, so the
# sub-checks' programs are cached on it), marked as jgc's own wrappers of a user function.


@dataclasses.dataclass(frozen=True)
class _Out:
    """f's output with its unchecked leaves None."""

    rules: Rules
    jgc_wrapper = True

    def __call__(self, *primals):
        return self.rules.out(*primals)


@dataclasses.dataclass(frozen=True)
class _JVPTangent:
    """check_jvp's jvp_fn: its tangents (zeros on unchecked leaves) → the JVP rule's output."""

    rules: Rules
    jgc_wrapper = True

    def __call__(self, primals, tangents):
        rules = self.rules
        _, t = jax.jvp(rules.out, tuple(primals), tuple(rules.tangents(primals, rules.float_in(tuple(tangents)))))
        return t


@dataclasses.dataclass(frozen=True)
class _VJPCotangent:
    """check_vjp's vjp_fn: a cotangent like f's output → per primal, None on unchecked leaves."""

    rules: Rules
    jgc_wrapper = True

    def __call__(self, primals, cotangent):
        _, pullback = jax.vjp(self.rules.out, *primals)
        return _none_unchecked(self.rules, pullback(cotangent))


@dataclasses.dataclass(frozen=True)
class _Evaluate:
    """`evaluate` as a cacheable program."""

    rules: Rules
    has_jvp: bool
    has_vjp: bool

    def __call__(self, primals, key):
        return evaluate(self.rules, primals, key, self.has_jvp, self.has_vjp)


def _none_unchecked(rules: Rules, cts):
    leaves = list(rules.spec.in_treedef.flatten_up_to(tuple(cts)))  # type: ignore[attr-defined]
    keep = set(rules.spec.in_index)
    leaves = [v if i in keep else None for i, v in enumerate(leaves)]
    return tuple(jax.tree_util.tree_unflatten(rules.spec.in_treedef, leaves))


@dataclasses.dataclass(frozen=True)
class _Output:
    """f's output leaf o alone."""

    rules: Rules
    o: int
    jgc_wrapper = True

    def __call__(self, *primals):
        return self.rules.out_leaves(self.rules.out(*primals))[self.o]


@dataclasses.dataclass(frozen=True)
class _OutputVJP:
    """The full VJP rule with a cotangent on output leaf o and zeros on the others."""

    rules: Rules
    o: int
    jgc_wrapper = True

    def __call__(self, primals, c):
        spec = self.rules.spec
        cts = [
            c if k == self.o else jnp.zeros(s, d) for k, (s, d) in enumerate(zip(spec.out_shapes, spec.out_dtypes, strict=True))
        ]
        _, pullback = jax.vjp(self.rules.out, *primals)
        return _none_unchecked(self.rules, pullback(self.rules.cotangent(cts)))
