"""Compare sampled derivatives (some coordinates, or random directions per leaf).

Leaf k has s_k coordinates and m_k samples: either m_k of its coordinates, or m_k
directional derivatives along directions uniform on its unit sphere. In both cases
(s_k / m_k)·Σ_samples x² is an unbiased estimate of the leaf's ‖x‖² (for a direction v
uniform on the unit sphere of R^s, E⟨x, v⟩² = ‖x‖² / s). The relative errors below are
the full check's formulas with every squared norm replaced by that estimate, so they
estimate the full check's values; per leaf the factor s_k / m_k cancels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _rel(err, a, b):
    denom = a + b
    return jnp.where(denom == 0, jnp.zeros_like(err), err / jnp.where(denom == 0, 1, denom))


def compare(numeric, analytic, counts, sizes, tol):
    """Verdict from samples grouped by leaf (samples of leaf k are contiguous, `counts[k]` of them).

    Returns:
      (rel_error, passed, leaf_rel_error (k,), leaf_passed (k,)) with the full check's
      criteria: a leaf passes when its relative error is within `tol` or its RMS
      discrepancy is within `tol` of the whole gradient's RMS scale.
    """
    k = len(sizes)
    seg = np.repeat(np.arange(k), counts)
    dtype = numeric.dtype
    sq = lambda x: jax.ops.segment_sum(x * x, seg, num_segments=k)  # noqa: E731
    err, num, ana = sq(numeric - analytic), sq(numeric), sq(analytic)
    leaf_rel = _rel(jnp.sqrt(err), jnp.sqrt(num), jnp.sqrt(ana))
    w = jnp.asarray(np.asarray(sizes, float) / np.asarray(counts, float), dtype)
    norm_num, norm_ana = jnp.sqrt(jnp.sum(w * num)), jnp.sqrt(jnp.sum(w * ana))
    rel_error = _rel(jnp.sqrt(jnp.sum(w * err)), norm_num, norm_ana)
    scale = (norm_num + norm_ana) / math.sqrt(sum(sizes))
    leaf_ok = (leaf_rel <= tol) | (jnp.sqrt(err / jnp.asarray(counts, dtype)) <= tol * scale)
    finite = jnp.all(jnp.isfinite(numeric)) & jnp.all(jnp.isfinite(analytic))
    passed = (rel_error <= tol) & jnp.all(leaf_ok) & finite
    return rel_error, passed, leaf_rel, leaf_ok
