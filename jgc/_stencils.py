"""Finite-difference stencils, step sizes and the default step and tolerance per dtype.

A stencil estimates g'(0) for g(t) = J(θ + t·d) from values of g at a few multiples
of a step h: g'(0) ≈ Σ_k w_k · g(o_k · h) / h.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Stencil:
    name: str
    offsets: tuple[float, ...]  # multiples of h at which g is evaluated; 0 means J(θ)
    weights: tuple[float, ...]  # g'(0) ≈ Σ w_k g(o_k h) / h
    order: int  # truncation error is O(h^order)
    complex: bool = False  # offsets are imaginary (complex step): g'(0) ≈ Re(Σ w_k g(o_k h)) / h

    @property
    def evals_per_probe(self) -> int:
        """Loss evaluations per probe; J(θ) itself is shared by all probes."""
        return sum(o != 0 for o in self.offsets)

    @property
    def uses_center(self) -> bool:
        return 0 in self.offsets


STENCILS = {
    s.name: s
    for s in (
        Stencil("central", (1.0, -1.0), (0.5, -0.5), 2),
        Stencil("forward", (1.0, 0.0), (1.0, -1.0), 1),
        Stencil("five_point", (2.0, 1.0, -1.0, -2.0), (-1 / 12, 8 / 12, -8 / 12, 1 / 12), 4),
        # Im J(θ + i·h·d) / h = Re(−i · J(θ + i·h·d)) / h: no subtraction, so no cancellation.
        Stencil("complex_step", (1j,), (-1j,), 2, complex=True),
    )
}


def get(method: str) -> Stencil:
    if not isinstance(method, str) or method not in STENCILS:
        raise ValueError(f"method={method!r} is not a known stencil; expected one of {sorted(STENCILS)}.")
    return STENCILS[method]


# Defaults, per dtype and stencil: (eps, tol). Measured with benchmarks/defaults.py and
# benchmarks/verdicts.py --sweep (false alarms / detection / localisation on the bug corpus,
# tests/corpus, 5 seeds; docs/verdicts.md). With the per-coordinate noise discount every eps
# within ×100 of these and every tol down to 1/100 of these gave no false alarm on smooth
# models; float32 tol 1e-1 loses detection (142/160), so float32 keeps 1e-2 (forward 2e-2:
# 5e-2 missed 8/160 bugs). forward and complex_step cannot see kinks (ReLU false alarms).
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


def default_eps(dtype, method: str) -> float:
    return _DEFAULTS[(jnp.dtype(dtype).name, method)][0]


def default_tol(dtype, method: str) -> float:
    return _DEFAULTS[(jnp.dtype(dtype).name, method)][1]


def coordinate_step(theta_i, eps):
    """The step for coordinate i: eps·max(1, |θ_i|), rounded so that θ_i + h is exact.

    Relative steps keep h well above the spacing of floats near large θ_i; the
    rounding trick (h := (θ_i + h) − θ_i) makes the step the stencil divides by the
    one the loss actually saw.
    """
    h = eps * jnp.maximum(1.0, jnp.abs(theta_i))
    return (theta_i + h) - theta_i


@dataclasses.dataclass(frozen=True)
class Extended:
    """A stencil widened so that one engine call also yields its error estimate.

    `stencil` evaluates g at the method's offsets o, at 2·o and at 0. Its weights give
    D(h), the method's own derivative (the extra offsets have weight 0); `weights2`
    give D(2h), the same stencil with the step doubled, so |D(h) − D(2h)| estimates
    the finite-difference error (Richardson). For real stencils with offsets ±1, ±2
    the one-sided differences (forward and backward, at h and 2h) come from the same
    values, which is how kinks are recognised.
    """

    base: Stencil
    stencil: Stencil
    weights2: tuple[complex, ...]

    def index(self, offset) -> int | None:
        return self.stencil.offsets.index(offset) if offset in self.stencil.offsets else None

    @property
    def one_sided(self) -> bool:
        """Whether g(±h), g(±2h) and g(0) are all evaluated (central, five_point)."""
        return all(self.index(o) is not None for o in (1.0, -1.0, 2.0, -2.0, 0.0))


def extended(stencil: Stencil) -> Extended:
    """The stencil plus its doubled-step copy and the centre: one engine call, honest cost."""
    offsets = list(stencil.offsets)
    for o in [2 * o for o in stencil.offsets] + [0.0]:
        if o not in offsets:
            offsets.append(o)
    w1 = [0.0] * len(offsets)
    w2 = [0.0] * len(offsets)
    for o, w in zip(stencil.offsets, stencil.weights, strict=True):
        w1[offsets.index(o)] += w
        w2[offsets.index(2 * o)] += w / 2
    wide = Stencil(stencil.name, tuple(offsets), tuple(w1), stencil.order, stencil.complex)
    return Extended(stencil, wide, tuple(w2))
