"""Result types: pytrees of arrays that cross jit and vmap, with per-leaf views built on access.

Every array is kept flat (one entry per probe: a coordinate, a sampled coordinate, a
direction, or a (direction, output) pair) or per group (one value per leaf), so the
program that computes a result does not grow with the number of leaves; `numeric`,
`leaf_passed`, … are pytrees shaped like the params, built when read. Fields are grouped
in sub-records (the verdict per leaf, the noise, the autodiff cross-check, the
diagnosis); what kind of check made a result is a class attribute.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _tree
from ._tree import Layout
from ._typing import Array, PyTree, Tracer
from ._verdict import Groups


class GradCheckError(AssertionError):
    """Raised by `jgc.assert_grad` and the `jgc.testing` helpers when a check is not a firm pass;
    the message is the report."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Noise:
    """How far the finite differences alone may be off, and what the loss was doing.

    Attributes:
      bound: per entry, the bound b on the error of the numeric value (rounding at κ = 4
        standard deviations of the measured rounding level, plus twice the truncation
        estimate where it was measured; at a kink, the one-sided derivatives' margin).
      kink: per entry, a kink with the analytic value a valid subgradient.
      known: per entry, False where the bound is not known: it lacks a truncation estimate it
        needed (inside a trace, beyond the static number of re-evaluated probes), or the
        stencil may straddle kinks and nothing could re-measure it.
      doubled: per entry, the stencil was also evaluated at step 2h (its discrepancy exceeded
        the rounding bound, so truncation or a kink could explain it).
      rough: per entry, the one-sided derivatives disagree and the analytic value is not
        between them (several kinks within the stencil, or a wrong subgradient).
      level: ε_J, the absolute rounding noise of the loss values (the largest over the
        outputs of a vector-valued function).
      rel_level: ε_J relative to max(1, |J(θ)|).
      center: J(θ) (the largest |output| of a vector-valued function).
      spread: the largest difference between two evaluations of the same points by the same
        compiled program (0 for a deterministic loss on CPU).
      deterministic: the spread is within what one program may differ by (nothing on CPU), and
        the loss traced twice gave the same program.
      same_trace: the loss traced twice gave the same program (False: it draws random numbers
        or reads changing state when it is traced, so every compiled program sees another loss).
    """

    bound: Array
    kink: Array
    known: Array
    doubled: Array
    rough: Array
    level: Array
    rel_level: Array
    center: Array
    spread: Array
    deterministic: Array
    same_trace: Array


# How each checked leaf's probes were evaluated (`Run.paths`), by code.
PATHS = ("", "plain: little to hoist", "plain: traced", "plain: side effects", "plain: stencil", "partial", "sparse")


def path_codes(layout: Layout, paths: tuple[str, ...]) -> np.ndarray:
    """Per checked leaf, the code (in PATHS) of the path its probes took ("" when partial
    evaluation was off: the plain engine)."""
    out = []
    for i in layout.checked_index:
        name = paths[i] if i < len(paths) else ""
        out.append(PATHS.index(name) if name in PATHS else 0)
    return np.asarray(out, np.int8)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Run:
    """What the check did beyond the plain recipe, as codes (the report makes the text).

    Attributes:
      paths: per checked leaf, how its probes were evaluated (a code of `PATHS`: plain, partial
        — only the part of the loss downstream of the leaf —, sparse — only the entries a
        one-entry change touches —; 0: the plain engine with partial evaluation off).
      how: per group (leaf), bit flags of what decided it beyond the first measurement: 1 its
        entries were re-measured in float64, 2 with adapted steps, 4 a failure confirmed at a
        second step, 8 a failure at the first step withdrawn (it did not persist).
      recheck: the float64 re-check of a float32 check: 0 not needed, 1 ran, 2 loss_fn does not
        return float64 for float64 inputs, 3 float64 evaluates another function (J(θ) or the
        gradient differ beyond float32's rounding: randomness or constants drawn by dtype),
        4 the functions cannot be traced in float64, 5 the loss computes in float16/bfloat16
        inside (float64 cannot make it more precise).
      precision: the precision the loss rounds like (0 float64, 1 float32, 2 float16, 3 bfloat16).
      resolve_evals: loss evaluations spent re-measuring unresolved leaves (host only).
      confirm_evals: loss evaluations spent confirming failures at a second step (host only).
      host_grad: grad_fn ran on the host (a NumPy backward pass).
    """

    paths: Array
    how: Array
    recheck: Array
    precision: Array
    resolve_evals: Array
    confirm_evals: Array
    host_grad: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Autodiff:
    """The `jax.grad` cross-check (`check_grad(..., autodiff=True)`).

    Attributes:
      gradient: `jax.grad(loss_fn)`, flat like θ.
      rel_error: manual (`grad_fn`) vs autodiff.
      rel_error_numeric: autodiff vs finite differences (large when a custom_vjp/custom_jvp
        rule is wrong or loss_fn is not differentiable at the point).
      passed: both within `tol`.
    """

    gradient: Array
    rel_error: Array
    rel_error_numeric: Array
    passed: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Per leaf, the recognised shape of a failing leaf's discrepancy (`jgc._diagnose`).

    Attributes:
      hint: 0 none, 1 scaled, 2 zero, 3 transposed, 4 l2, 5 rows, 6 columns.
      param: the hint's parameter (c for scaled, λ for l2, the number of rows or columns).
    """

    hint: Array
    param: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class GradCheck:
    """The outcome of a gradient check: passed, failed, or inconclusive.

    Every array gains leading batch axes when the check runs under `jax.vmap`.

    Attributes:
      passed: bool; a firm pass: every leaf resolved within `tol` (or, for a leaf whose
        gradient is ~0, negligible against the whole gradient in float64), nothing
        failed, every value finite, the loss deterministic.
      failed: bool; some leaf's discrepancy is beyond what the finite differences can
        explain, a value is not finite, or the loss is not deterministic.
      rel_error: ‖numeric − analytic‖₂ / (‖numeric‖₂ + ‖analytic‖₂) over all checked
        coordinates (0 when both are 0).
      tol: the relative error a pass guarantees.
      eps: the base step (coordinate j is stepped by eps·max(1, |θ_j|)).
      num_evals: loss evaluations the check performed (with what resolution and confirmation
        cost: `run.resolve_evals`, `run.confirm_evals`).
      numeric_flat, analytic_flat: the values per entry (flat; `numeric`/`analytic` are
        the pytree views).
      groups: the verdict per leaf (`rel_error`, `lower`, `upper`, `noise`, `passed`,
        `failed`; see `jgc/_verdict.py`), flat over the checked leaves.
      noise: `jgc.Noise`: bounds, kinks, the loss's rounding level, determinism.
      run: `jgc.Run`: what the check did beyond the plain recipe (paths per leaf, float64
        re-check, confirmation of failures, their costs), as codes.
      diagnosis: `jgc.Diagnosis` hints per leaf (full checks), or None.
      autodiff: `jgc.Autodiff` with `check_grad(..., autodiff=True)`, else None.
      layout: static description of the params (paths, shapes, dtypes, checked).
      method: the finite-difference stencil.
      host_notes: what ran on the host (a NumPy loss through `jax.pure_callback`, a NumPy
        gradient cast or matched by name), as report lines: the same for the same check at
        any point, so results stack.
      host_cost: for a NumPy (host) loss, what its host calls cost, float64 (4,): callbacks,
        points evaluated, seconds inside the user's function, seconds of the whole check;
        else None.
    """

    passed: Array
    failed: Array
    rel_error: Array
    tol: Array
    eps: Array
    num_evals: Array
    numeric_flat: Array
    analytic_flat: Array
    groups: Groups
    noise: Noise
    run: Run
    diagnosis: Diagnosis | None
    autodiff: Autodiff | None
    layout: Layout = dataclasses.field(metadata=dict(static=True))
    method: str = dataclasses.field(metadata=dict(static=True))
    host_notes: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))
    host_cost: Array | None = None

    kind: ClassVar[str] = "check_grad"  # the check that made it (the report's title)
    evaluates: ClassVar[str] = "loss"  # what num_evals counts
    index_label: ClassVar[str] = "worst index"

    # ------------------------------------------------------------ per-leaf views

    def view(self, flat) -> PyTree:
        """A flat per-entry array (e.g. `noise.bound`) as a pytree shaped like the params."""
        return _tree.unravel_full(self.layout, flat, fill=False if np.dtype(flat.dtype) == bool else np.nan)

    def per_leaf(self, values, fill=np.nan) -> PyTree:
        """A per-group array (..., k) as a pytree with one value per leaf."""
        return _tree.per_leaf(self.layout, values, fill)

    @property
    def inconclusive(self) -> jax.Array:
        """bool; neither a firm pass nor a failure: the differences cannot resolve `tol` somewhere."""
        return ~self.passed & ~self.failed

    @property
    def numeric(self) -> PyTree:
        """Finite-difference values shaped like the params (NaN on leaves not checked)."""
        return self.view(self.numeric_flat)

    @property
    def analytic(self) -> PyTree:
        """The gradient under test shaped like the params (NaN on leaves not checked)."""
        return self.view(self.analytic_flat)

    @property
    def leaf_rel_error(self) -> PyTree:
        return self.per_leaf(self.groups.rel_error)

    @property
    def leaf_passed(self) -> PyTree:
        """One bool per leaf: a firm pass (True on leaves not checked)."""
        return self.per_leaf(self.groups.passed, fill=True)

    @property
    def leaf_failed(self) -> PyTree:
        """One bool per leaf: a proven discrepancy (False on leaves not checked)."""
        return self.per_leaf(self.groups.failed, fill=False)

    @property
    def resolve_evals(self) -> jax.Array:
        """Loss evaluations spent re-measuring unresolved leaves and confirming failures."""
        return self.run.resolve_evals + self.run.confirm_evals

    @property
    def leaf_eval(self) -> tuple[str, ...]:
        """Per leaf of the params, how its probes were evaluated ("partial", "sparse", "plain…",
        "" not checked) — host-side, from `run.paths` (unbatched)."""
        codes = np.asarray(self.run.paths).reshape(-1, self.layout.k)[0]
        if not codes.any():  # partial evaluation was off
            return ()
        out = [""] * len(self.layout.shapes)
        for k, i in enumerate(self.layout.checked_index):
            out[i] = PATHS[int(codes[k])]
        return tuple(out)

    @property
    def notes(self) -> tuple[str, ...]:
        """What the check did beyond the plain recipe, as the report's note lines (host-side; for a
        batched result, every note of any of its checks, in order)."""
        from ._report import notes, select

        batch = int(np.prod(np.shape(self.passed)))
        if not np.ndim(self.passed):
            return tuple(notes(self))
        out: list[str] = []
        for i in range(batch):
            out += [n for n in notes(select(self, i)) if n not in out]
        return tuple(out)

    @property
    def kink(self) -> PyTree:
        return self.view(self.noise.kink)

    @property
    def deterministic(self) -> jax.Array:
        return self.noise.deterministic

    @property
    def status(self) -> str:
        """ "passed", "failed" or "inconclusive" (host-side, unbatched)."""
        if np.ndim(self.passed):
            raise ValueError("status is for one check; a batched result has one per seed (use passed/failed arrays).")
        return "passed" if bool(self.passed) else "failed" if bool(self.failed) else "inconclusive"

    # ------------------------------------------------------------ host-side

    def report(self, max_leaves: int | None = 40) -> str:
        """The text report: a verdict line, then one row per leaf (failing leaves first).

        Args:
          max_leaves: show at most this many leaves besides the failing ones (which are always
            shown; unresolved leaves come first); `None` shows all.
        """
        from ._report import format_report

        return format_report(self, max_leaves=max_leaves)

    def worst(self, k: int = 5):
        """The k coordinates with the largest |numeric − analytic| (non-finite first).

        Returns:
          A list of `jgc.Coordinate(seed, path, index, numeric, analytic)`; `seed` is
          the flat batch index for a batched result and `None` otherwise.
        """
        from ._report import worst

        return worst(self, k)

    def plot(self, leaf: str | None = None):
        """Per-leaf relative errors and a heatmap of |numeric − analytic| (needs matplotlib).

        Args:
          leaf: path of a 2-D leaf to show as a heatmap; `None` picks the worst
            failing 2-D leaf (no heatmap when there is none).

        A batched result shows its worst seed. Host-side; matplotlib is imported
        only here (`pip install jgc[plot]`).

        Returns:
          The `matplotlib.figure.Figure`.
        """
        from ._plot import plot

        return plot(self, leaf=leaf)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        from ._report import summary_line

        return f"{type(self).__name__}({summary_line(self)})"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class SampledCheck(GradCheck):
    """A `GradCheck` on a random sample of coordinates (`check_grad(..., coords=k, key=...)`).

    `numeric` and `analytic` are NaN on the coordinates that were not sampled; `rel_error`
    estimates the full check's value (see docs/scale.md), per-leaf values are over the
    leaf's sampled coordinates.

    Attributes:
      index: the flat θ index of each sampled coordinate.
      sampled: how many coordinates were checked (every checked leaf gets some).
    """

    index: Array | None = None
    sampled: int = dataclasses.field(default=0, metadata=dict(static=True))

    def view(self, flat) -> PyTree:
        assert self.index is not None
        fill = False if np.dtype(flat.dtype) == bool else np.nan
        batch = flat.shape[:-1]
        index = jnp.broadcast_to(self.index, batch + self.index.shape[-1:])
        if isinstance(flat, Tracer) or isinstance(index, Tracer):
            full = jnp.put_along_axis(jnp.full(batch + (self.layout.n,), fill, flat.dtype), index, flat, axis=-1, inplace=False)
        else:
            full = np.full(batch + (self.layout.n,), fill, np.asarray(flat).dtype)
            np.put_along_axis(full, np.asarray(index), np.asarray(flat), axis=-1)
        return _tree.unravel_full(self.layout, full, fill)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class DirectionCheck(GradCheck):
    """The outcome of `jgc.check_directions`: random directions, each on one leaf.

    Fields mean what they mean in `GradCheck`, except `numeric` and `analytic`: pytrees
    like the params whose leaf is a vector of `num_directions` directional derivatives
    (finite difference, and ⟨gradient, direction⟩) along that leaf's directions. `rel_error`
    estimates the full check's value (see docs/scale.md).

    Attributes:
      num_directions: directions per checked leaf.
    """

    num_directions: int = dataclasses.field(default=0, metadata=dict(static=True))

    kind: ClassVar[str] = "check_directions"
    index_label: ClassVar[str] = "worst dir"

    def view(self, flat) -> PyTree:
        num, lay = self.num_directions, self.layout
        fill = False if np.dtype(flat.dtype) == bool else np.nan
        batch = flat.shape[:-1]
        leaves = [np.full(batch + (num,), fill, flat.dtype) for _ in lay.shapes]
        for k, i in enumerate(lay.checked_index):
            leaves[i] = flat[..., k * num : (k + 1) * num]
        return jax.tree_util.tree_unflatten(lay.treedef, leaves)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class VJPCheck(GradCheck):
    kind: ClassVar[str] = "check_vjp"
    evaluates: ClassVar[str] = "f"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class JVPCheck(GradCheck):
    kind: ClassVar[str] = "check_jvp"
    evaluates: ClassVar[str] = "f"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class HVPCheck(GradCheck):
    kind: ClassVar[str] = "check_hvp"
    evaluates: ClassVar[str] = "gradient"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LayerCheck(GradCheck):
    """`jgc.check_layer`: a layer pair's backward pass as the gradient of Σ forward(…)[0] · dout;
    the leaves are the differentiated inputs."""

    kind: ClassVar[str] = "check_layer"
    evaluates: ClassVar[str] = "forward"
