"""Rounding-aware arithmetic: inner products whose rounding error has a proven bound.

`jnp.dot` and `jnp.sum` leave the order of the additions to the compiler (a sequential
loop, lanes, a tree), so the only bound that holds for them is the sequential one,
γ_n·Σ|aᵢbᵢ| with n the length. `dot` sums the products in a fixed tree of small
reductions (8 terms each, ⌈log₈ n⌉ levels, each level a separate reduction no compiler
merges with the next), so its error is at most γ_{7⌈log₈ n⌉+1}·Σ|aᵢbᵢ| (Higham,
*Accuracy and Stability of Numerical Algorithms*, §4.2 and (3.5)): 50·u for a million
terms instead of a million·u, in a handful of operations. The checks that
compare two inner products (the dot-product test, the Taylor remainders) use it so that
their rounding bound is a bound, not a guess.

Everything is pure jax.numpy on arrays with the reduced axis last; complex vectors are
viewed as real ones of twice the length (`real_view`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a dtype with p significand bits (half an ulp of 1; float64 1.1e-16, float32 6.0e-8)."""
    return float(jnp.finfo(dtype).eps) / 2


def gamma(k: int, dtype) -> float:
    """γ_k = k·u / (1 − k·u): the relative error bound of k successive roundings."""
    ku = k * unit_roundoff(dtype)
    return ku / (1 - ku) if ku < 1 else math.inf


FAN_IN = 8  # terms summed by one reduction of the tree


def depth(n: int) -> int:
    """Levels of the summation tree over n terms (0 for n ≤ 1)."""
    d, width = 0, 1
    while width < n:
        width *= FAN_IN
        d += 1
    return d


def roundings(n: int) -> int:
    """How many roundings a term of the tree's sum goes through at most: FAN_IN − 1 per level
    (a reduction of FAN_IN terms in any order rounds at most FAN_IN − 1 times)."""
    return (FAN_IN - 1) * depth(n)


def pairwise_sum(x, xp=jnp):
    """Σ over the last axis in a fixed tree of reductions of FAN_IN terms (zero padding is exact).

    Whatever order the compiler gives each small reduction, the error is at most
    γ_roundings(n)·Σ|xᵢ| (Higham, (4.4) for any order of FAN_IN terms, level by level)."""
    n = x.shape[-1]
    if n == 0:
        return xp.zeros(x.shape[:-1], x.dtype)
    width = FAN_IN ** depth(n)
    if width != n:
        x = xp.concatenate([x, xp.zeros(x.shape[:-1] + (width - n,), x.dtype)], axis=-1)
    while x.shape[-1] > 1:
        x = xp.sum(x.reshape(x.shape[:-1] + (x.shape[-1] // FAN_IN, FAN_IN)), axis=-1)
    return x[..., 0]


def real_view(x, xp=jnp):
    """A complex vector as the real one [Re x, Im x] (last axis doubled); a real vector as it is."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return xp.concatenate([xp.real(x), xp.imag(x)], axis=-1)
    return x


def dot(a, b, xp=jnp):
    """(Σ aᵢbᵢ, a bound on its rounding error) over the last axis of two real arrays.

    The bound is γ_{L+1}·Σ|aᵢbᵢ|·(1 + γ_{L+1}) with L = `roundings(n)`: the products and
    the tree's sum each round, and the sum of magnitudes is itself computed in floating
    point (the last factor makes it an upper bound of the exact one).
    """
    dtype = xp.result_type(a, b)
    p = a.astype(dtype) * b.astype(dtype)
    g = gamma(roundings(a.shape[-1]) + 1, dtype)
    total = pairwise_sum(p, xp)
    magnitude = pairwise_sum(xp.abs(p), xp)
    return total, g * (1 + g) * magnitude


def norm(x, xp=jnp):
    """‖x‖₂ over the last axis (real arrays), by the tree sum of squares."""
    return xp.sqrt(pairwise_sum(x * x, xp))
