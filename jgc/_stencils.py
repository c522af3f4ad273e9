"""Finite-difference stencils, and the default step and tolerance per dtype.

A stencil estimates g'(0) for g(t) = J(θ + t·d) from values of g at a few multiples
of a step h: g'(0) ≈ Σ_k w_k · g(o_k · h) / h. J(θ) itself (offset 0) is evaluated once
per check, not per probe, so `offsets` lists the nonzero offsets and `center` the weight
of g(0). The same stencil at step 2h (`doubled`) gives the Richardson estimate of the
truncation error, and, with g(0), the one-sided differences that recognise kinks.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Stencil:
    name: str
    offsets: tuple  # nonzero multiples of h at which g is evaluated (imaginary for the complex step)
    weights: tuple  # g'(0) ≈ (Σ w_k g(o_k h) + center · g(0)) / h
    center: float  # weight of g(0)
    order: int  # truncation error is O(h^order)
    complex: bool = False  # offsets are imaginary: g'(0) ≈ Re(Σ w_k g(o_k h)) / h

    @property
    def evals_per_probe(self) -> int:
        return len(self.offsets)

    @property
    def doubled(self) -> tuple:
        """The offsets of the same stencil at step 2h."""
        return tuple(2 * o for o in self.offsets)

    @property
    def noise_gain(self) -> float:
        """‖w‖₂ with the centre: how much independent rounding of the values the derivative keeps, per 1/h."""
        return math.sqrt(sum(abs(w) ** 2 for w in self.weights) + self.center**2)

    @property
    def one_sided(self) -> bool:
        """Whether the stencil and its doubled copy hold g(±h) and g(±2h) (with g(0): kinks are visible)."""
        held = set(self.offsets) | set(self.doubled)
        return not self.complex and all(o in held for o in (1.0, -1.0, 2.0, -2.0))


STENCILS = {
    s.name: s
    for s in (
        Stencil("central", (1.0, -1.0), (0.5, -0.5), 0.0, 2),
        Stencil("forward", (1.0,), (1.0,), -1.0, 1),
        Stencil("five_point", (2.0, 1.0, -1.0, -2.0), (-1 / 12, 8 / 12, -8 / 12, 1 / 12), 0.0, 4),
        # Im J(θ + i·h·d) / h = Re(−i · J(θ + i·h·d)) / h: no subtraction, so no cancellation.
        Stencil("complex_step", (1j,), (-1j,), 0.0, 2, complex=True),
    )
}


def get(method: str) -> Stencil:
    if not isinstance(method, str) or method not in STENCILS:
        raise ValueError(f"method={method!r} is not a known stencil; expected one of {sorted(STENCILS)}.")
    return STENCILS[method]


# The precisions a loss can round like, most precise first (codes: their positions).
PRECISIONS = ("float64", "float32", "float16", "bfloat16")


def unit(dtype) -> float:
    """The machine epsilon of a float dtype (by name or dtype): the spacing of floats at 1."""
    return float(jnp.finfo(jnp.dtype(dtype)).eps)


# Nominal defaults, per precision and stencil: (eps, tol). `tol` is the relative error a firm
# pass guarantees (the differences must resolve it) and the bar a proven error must clear to
# fail. These tolerances are what finite differences in that precision can resolve on their
# own (inside a trace, or for a loss that rounds like float32 whatever its parameters); a
# float32 check on the host, where unresolved leaves can be re-checked in float64,
# guarantees RECHECKED_TOL instead. eps is raised when the loss rounds more than its
# precision's unit (`defaults`). float64/float32 come from sweeps over the bug corpus
# (docs/verdicts.md); float16/bfloat16 (a float32 loss computing partly in them) from the
# optimal central step (3u)^(1/3) and its error ~1.5·u^(2/3), with a margin.
_DEFAULTS = {
    ("float64", "central"): (1e-6, 1e-6),
    ("float64", "forward"): (1e-8, 1e-5),
    ("float64", "five_point"): (1e-4, 1e-6),
    ("float64", "complex_step"): (1e-10, 1e-8),
    ("float32", "central"): (3e-3, 1e-2),
    ("float32", "forward"): (1e-3, 2e-2),
    ("float32", "five_point"): (3e-2, 1e-2),
    ("float32", "complex_step"): (1e-4, 1e-4),
    ("float16", "central"): (1e-1, 5e-2),
    ("float16", "forward"): (3e-2, 1e-1),
    ("float16", "five_point"): (2e-1, 5e-2),
    ("float16", "complex_step"): (1e-4, 1e-2),
    ("bfloat16", "central"): (2e-1, 1e-1),
    ("bfloat16", "forward"): (1e-1, 2e-1),
    ("bfloat16", "five_point"): (3e-1, 1e-1),
    ("bfloat16", "complex_step"): (1e-4, 5e-2),
}


# float32 on the host: what a firm pass guarantees when unresolved leaves are re-checked in
# float64 (benchmarks/verdicts.py: subtle bugs, 1e-5…1e-3, are then caught).
RECHECKED_TOL = 1e-4


def _name(precision) -> str:
    return precision if isinstance(precision, str) else jnp.dtype(precision).name


def nominal_eps(precision, method: str) -> float:
    return _DEFAULTS[(_name(precision), method)][0]


def default_tol(precision, method: str) -> float:
    return _DEFAULTS[(_name(precision), method)][1]


# A loss whose measured relative rounding level exceeds this many units of its precision
# rounds worse than that precision (cancellation, long sums): its step grows.
_ULPS = 64


def precision(theta_dtype, inside, rel_level, xp=np, callback: bool = False):
    """The code (in PRECISIONS) of the precision a loss rounds like.

    θ's dtype, unless the loss's measured relative rounding level is nearer (on a log scale)
    to a less precise dtype's unit than to θ's: float32 for a float64 loss (float32 inside,
    or a NumPy loss that computes in float32), and float16/bfloat16 — only where the jaxpr
    computes in that dtype (`inside`) or calls back into Python (`callback`: what it computes
    in cannot be read). A loss that is small by cancellation of large terms rounds at many ulps
    of its value and keeps its precision (its step grows instead).
    """
    theta = _name(theta_dtype)
    code = xp.asarray(PRECISIONS.index(theta), np.int32)
    lower = inside in ("float32", "float16", "bfloat16") or callback
    candidates = ["float32"] if theta == "float64" and lower else []
    if inside in ("float16", "bfloat16"):
        candidates.append(inside)
    previous = theta
    for low in candidates:
        split = np.sqrt(unit(low) * unit(previous))
        code = xp.where(rel_level > split, PRECISIONS.index(low), code).astype(np.int32)
        previous = low
    return code


def defaults(precision_code, method: str, rel_level, xp=np, recheck: bool = False):
    """(eps, tol) for a loss that rounds like `PRECISIONS[precision_code]`, at measured relative
    rounding level `rel_level`.

    Where the loss rounds worse than that precision's unit, the step grows like
    rel_level^(1/(order+1)) (where rounding, ∝ 1/h, and truncation, ∝ h^order, meet),
    calibrated to meet the float32 nominal step. `recheck`: unresolved leaves can be
    re-checked in float64 (a float32 check on the host), so the tolerance is RECHECKED_TOL.
    """
    code = xp.asarray(precision_code)
    pick = lambda values: xp.asarray(np.asarray(values, np.float64))[code]  # noqa: E731
    eps = pick([nominal_eps(n, method) for n in PRECISIONS])
    tol = pick([default_tol(n, method) for n in PRECISIONS])
    if recheck:
        tol = xp.where(code == PRECISIONS.index("float32"), xp.minimum(tol, RECHECKED_TOL), tol)
    stencil = STENCILS[method]
    if not stencil.complex:
        u = pick([unit(n) for n in PRECISIONS])
        p = stencil.order + 1
        c = nominal_eps("float32", method) / unit("float32") ** (1 / p)
        eps = xp.where(rel_level > _ULPS * u, xp.maximum(eps, c * xp.asarray(rel_level) ** (1 / p)), eps)
    return eps, tol
