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

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        from ._report import summary_line

        return f"GradCheck({summary_line(self)})"
