"""GradCheck: the result of a check, a pytree of arrays that crosses jit and vmap."""

from __future__ import annotations

import dataclasses

import jax

from ._tree import Layout
from ._typing import PyTree


class GradCheckError(AssertionError):
    """Raised by `jgc.assert_grad` when a gradient check fails; the message is the report."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class GradCheck:
    """The outcome of a gradient check.

    Every array field gains leading batch axes when the check runs under `jax.vmap`.

    Attributes:
      rel_error: ‖numeric − analytic‖₂ / (‖numeric‖₂ + ‖analytic‖₂) over all checked
        coordinates (0 when both are 0).
      passed: bool; `rel_error <= tol`, every leaf passes (see `leaf_passed`) and
        every value is finite.
      tol: the threshold used.
      eps: the base step used (coordinate i is stepped by eps·max(1, |θ_i|)).
      numeric: finite-difference gradient, shaped like the params; NaN on leaves
        that were not checked.
      analytic: the gradient under test, shaped like the params; NaN on leaves
        that were not checked.
      leaf_rel_error: one relative error per leaf, shaped like the params.
      leaf_passed: one bool per leaf: its relative error is within `tol`, or its
        root-mean-square discrepancy is within `tol` of the whole gradient's
        root-mean-square scale (so a leaf whose gradient is ~0 is not failed for
        noise, while a wrong small leaf is not hidden by large ones).
      num_evals: number of loss evaluations the check performed.
      method: the finite-difference stencil.
      layout: static description of the params (paths, shapes, dtypes, checked).
      check: which check produced it ("check_grad", "check_vjp", "check_jvp",
        "check_hvp"); for the report.
      autodiff: with `check_grad(..., autodiff=True)`, `jax.grad(loss_fn)` shaped
        like the params (NaN on unchecked leaves); `None` otherwise.
      rel_error_autodiff: relative distance manual (`grad_fn`) vs autodiff; NaN when
        the cross-check is off.
      rel_error_autodiff_numeric: relative distance autodiff vs finite differences:
        large when a custom_vjp/custom_jvp rule is wrong or `loss_fn` is not
        differentiable at the point; NaN when off.
      autodiff_passed: bool; both autodiff distances within `tol` (True when off).
      excess_rel_error: the relative error of the discrepancy left after discounting,
        coordinate by coordinate, twice its estimated noise and accepted kinks; this,
        not `rel_error`, is compared with `tol`.
      noise_floor: ‖noise‖₂ / (‖numeric‖₂ + ‖analytic‖₂): the relative error that the
        finite differences alone may account for.
      noise: per coordinate, shaped like the params: the estimated error of the
        numeric value, |D(h) − D(2h)| (Richardson) plus a rounding floor.
      leaf_noise_floor: `noise_floor` per leaf.
      kink: per coordinate, shaped like the params: the one-sided differences
        disagree beyond noise (a point where the loss is not differentiable lies
        within the stencil) and the analytic value lies between them, so it is
        accepted as a valid subgradient.
      deterministic: bool; two evaluations of the loss at θ gave the same value.
        False fails the check: randomness must come from a key in `*args`.
      loss_values: the two evaluations of J(θ), shape (2,).
      hint: per leaf, an int code of the recognised shape of a failing leaf's
        discrepancy (0 none, 1 scaled, 2 zero, 3 transposed, 4 l2, 5 rows,
        6 columns; see `jgc._diagnose`).
      hint_param: per leaf, the hint's parameter (c for scaled, λ for l2, the number
        of rows or columns).
      leaf_eval: with `partial_eval=True`, per leaf of the params, how its probes
        were evaluated: "partial" (only the part of the loss downstream of the leaf),
        "plain: <reason>" (the whole loss), or "" (not checked); empty otherwise.
    """

    rel_error: jax.Array
    passed: jax.Array
    tol: jax.Array
    eps: jax.Array
    numeric: PyTree
    analytic: PyTree
    leaf_rel_error: PyTree
    leaf_passed: PyTree
    num_evals: jax.Array
    method: str = dataclasses.field(metadata=dict(static=True))
    layout: Layout = dataclasses.field(metadata=dict(static=True))
    check: str = dataclasses.field(default="check_grad", metadata=dict(static=True))
    autodiff: PyTree = None
    rel_error_autodiff: jax.Array = float("nan")
    rel_error_autodiff_numeric: jax.Array = float("nan")
    autodiff_passed: jax.Array = True
    excess_rel_error: jax.Array | None = None
    noise_floor: jax.Array | None = None
    noise: PyTree = None
    leaf_noise_floor: PyTree = None
    kink: PyTree = None
    deterministic: jax.Array | None = None
    loss_values: jax.Array | None = None
    hint: PyTree = None
    hint_param: PyTree = None
    leaf_eval: tuple[str, ...] = dataclasses.field(default=(), metadata=dict(static=True))

    def report(self, max_leaves: int | None = 40) -> str:
        """The text report: a verdict line, then one row per leaf (failing leaves first).

        Args:
          max_leaves: show at most this many passing leaves (failing ones are always
            shown); `None` shows all.
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
    estimates the full check's value (see docs/scale.md), `leaf_rel_error` is over the
    leaf's sampled coordinates.

    Attributes:
      sampled: how many coordinates were checked (every checked leaf gets some).
    """

    sampled: int = dataclasses.field(default=0, metadata=dict(static=True))


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
    report_title = "check_directions"  # class attributes (not fields) read by the report
    index_label = "worst dir"
