"""Rounding-aware arithmetic: inner products whose rounding error has a proven bound.

`jnp.dot` and `jnp.sum` leave the order of the additions to the compiler (a sequential
loop, lanes, a tree), so the only bound that holds for them is the sequential one,
γ_n·Σ|aᵢbᵢ| with n the length. `dot` sums the products in a fixed pairwise tree
(⌈log₂ n⌉ levels of slice-and-add, which no compiler reassociates), so its error is at
most γ_{⌈log₂ n⌉+1}·Σ|aᵢbᵢ| (Higham, *Accuracy and Stability of Numerical Algorithms*,
§4.2 and (3.5)): 21·u for a million terms instead of a million·u. The checks that
compare two inner products (the dot-product test, the Taylor remainders) use it so that
their rounding bound is a bound, not a guess.

Everything is pure jax.numpy on arrays with the reduced axis last; complex vectors are
viewed as real ones of twice the length (`real_view`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def unit_roundoff(dtype) -> float:
    """u = 2^-p for a dtype with p significand bits (half an ulp of 1; float64 1.1e-16, float32 6.0e-8)."""
    return float(jnp.finfo(dtype).eps) / 2


def gamma(k: int, dtype) -> float:
    """γ_k = k·u / (1 − k·u): the relative error bound of k successive roundings."""
    ku = k * unit_roundoff(dtype)
    return ku / (1 - ku) if ku < 1 else math.inf


def levels(n: int) -> int:
    """The depth ⌈log₂ n⌉ of the pairwise tree over n terms (0 for n ≤ 1)."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def pairwise_sum(x: jax.Array) -> jax.Array:
    """Σ over the last axis in a fixed pairwise tree (zeros pad it to a power of two: exact)."""
    n = x.shape[-1]
    if n == 0:
        return jnp.zeros(x.shape[:-1], x.dtype)
    width = 1 << levels(n)
    if width != n:
        x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (width - n,), x.dtype)], axis=-1)
    while x.shape[-1] > 1:
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def real_view(x: jax.Array) -> jax.Array:
    """A complex vector as the real one [Re x, Im x] (last axis doubled); a real vector as it is."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return jnp.concatenate([jnp.real(x), jnp.imag(x)], axis=-1)
    return x


def dot(a: jax.Array, b: jax.Array):
    """(Σ aᵢbᵢ, a bound on its rounding error) over the last axis of two real arrays.

    The bound is γ_{L+1}·Σ|aᵢbᵢ|·(1 + γ_{L+1}) with L = ⌈log₂ n⌉: the products and the
    pairwise sum each round, and the sum of magnitudes is itself computed in floating
    point (the last factor makes it an upper bound of the exact one).
    """
    dtype = jnp.result_type(a, b)
    p = a.astype(dtype) * b.astype(dtype)
    g = gamma(levels(a.shape[-1]) + 1, dtype)
    total = pairwise_sum(p)
    magnitude = pairwise_sum(jnp.abs(p))
    return total, g * (1 + g) * magnitude


def norm(x: jax.Array) -> jax.Array:
    """‖x‖₂ over the last axis (real arrays), by the pairwise sum of squares."""
    return jnp.sqrt(pairwise_sum(x * x))


def as_numpy_float(x) -> np.ndarray:
    """A host copy as a NumPy float array (for reports)."""
    return np.asarray(x, dtype=float)
