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


# Nominal defaults, per dtype and stencil: (eps, tol). `tol` is the relative error a firm
# pass guarantees (the differences must resolve it); a failure needs a discrepancy beyond
# the estimated noise. These tolerances are what finite differences in that precision can
# resolve on their own (inside a trace, or for a loss that rounds like float32 whatever its
# parameters); a float32 check on the host, where unresolved leaves can be re-checked in
# float64, guarantees RECHECKED_TOL instead. eps is raised when the loss rounds more than
# its parameters' dtype (`defaults`). The values come from sweeps over the bug corpus
# (docs/verdicts.md).
_DEFAULTS = {
    ("float64", "central"): (1e-6, 1e-6),
    ("float64", "forward"): (1e-8, 1e-5),
    ("float64", "five_point"): (1e-4, 1e-6),
    ("float64", "complex_step"): (1e-10, 1e-8),
    ("float32", "central"): (3e-3, 1e-2),
    ("float32", "forward"): (1e-3, 2e-2),
    ("float32", "five_point"): (3e-2, 1e-2),
    ("float32", "complex_step"): (1e-4, 1e-4),
}


# float32 on the host: what a firm pass guarantees when unresolved leaves are re-checked in
# float64 (benchmarks/verdicts.py: subtle bugs, 1e-5…1e-3, are then caught).
RECHECKED_TOL = 1e-4


def nominal_eps(dtype, method: str) -> float:
    return _DEFAULTS[(jnp.dtype(dtype).name, method)][0]


def default_tol(dtype, method: str) -> float:
    return _DEFAULTS[(jnp.dtype(dtype).name, method)][1]


# A loss whose measured relative rounding level exceeds this many ulps of a dtype computes
# at a lower precision than that dtype (e.g. float64 parameters, float32 inside).
_ULPS = 64


def lower_precision(theta_dtype, rel_level, xp=np):
    """Whether a loss of float64 parameters rounds like float32 or worse (bool; traced under jit).

    Its relative rounding level is nearer float32's unit roundoff than float64's on a log
    scale: above √(u₃₂·u₆₄) ≈ 5e-12. A float64 loss that is small by cancellation rounds at
    many float64 ulps of its value (1e-14 … 1e-12) and stays float64; a loss computed in
    float32 inside rounds at ~1e-8.
    """
    if jnp.dtype(theta_dtype).name != "float64":
        return xp.asarray(False)
    u32, u64 = float(jnp.finfo(jnp.float32).eps), float(jnp.finfo(jnp.float64).eps)
    return xp.asarray(rel_level > np.sqrt(u32 * u64))


def defaults(theta_dtype, method: str, rel_level, xp=np, recheck: bool = False):
    """(eps, tol) for a loss of measured relative rounding level `rel_level`.

    The nominal values of the loss's real precision: θ's dtype, or float32 when a loss of
    float64 parameters rounds like float32. Where the loss rounds worse than that
    precision's expected level, the step grows like rel_level^(1/(order+1)) (where rounding,
    ∝ 1/h, and truncation, ∝ h^order, meet), calibrated to meet the float32 nominal step.
    `recheck`: unresolved leaves can be re-checked in float64 (a float32 check on the host),
    so the tolerance is RECHECKED_TOL.
    """
    name = jnp.dtype(theta_dtype).name
    low = lower_precision(theta_dtype, rel_level, xp)
    eps = xp.where(low, nominal_eps("float32", method), nominal_eps(name, method))
    tol = xp.where(low, default_tol("float32", method), default_tol(name, method))
    if recheck and name == "float32":
        tol = xp.minimum(tol, RECHECKED_TOL)
    stencil = STENCILS[method]
    if not stencil.complex:
        u = xp.where(low, float(jnp.finfo(jnp.float32).eps), float(jnp.finfo(name).eps))
        p = stencil.order + 1
        c = nominal_eps("float32", method) / float(jnp.finfo(jnp.float32).eps) ** (1 / p)
        eps = xp.where(rel_level > _ULPS * u, xp.maximum(eps, c * xp.asarray(rel_level) ** (1 / p)), eps)
    return eps, tol
