"""The cost model: which path each checked leaf takes.

Costs are estimated from the jaxprs in flops: `dot_general` and convolutions by their
multiply-adds, an equation with nested jaxprs by their cost (times `length` for `scan`),
everything else one per output element. Per leaf p (`choose`), with `total` the loss's
cost and `evals` the evaluations p's probes take:

- `plain: side effects`: the loss has side effects (callbacks, debug prints), whose count
  hoisting would change; `plain: stencil`: the stencil's offsets are not real numbers (a
  complex step needs the whole loss);
- `FORCE`, when a test sets it, for every leaf that neither of these keeps plain;
- `plain: little to hoist` when even skipping the whole loss would save less than
  `MIN_FLOPS_SAVED` over p's evaluations (its own program has to be compiled);
- else *partial* when the downstream equations cost at most 1 − `MIN_SAVING` of the loss
  and save `MIN_FLOPS_SAVED`; and *sparse*, in preference, when the jaxpr that one sparse
  evaluation traces to (`sparse_cost`) costs at most 1 − `MIN_SAVING` of the path chosen
  so far and saves `MIN_FLOPS_SAVED` too.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _jaxpr
from . import _sparse

# A leaf takes the partial path when the equations it does not reach are at least this
# fraction of the loss's estimated cost (otherwise the plain engine does the same work).
MIN_SAVING = 0.1

# A leaf leaves the plain engine only when its evaluations save this many estimated flops:
# its own program has to be compiled (~0.1–0.5 s), which at ~1 GFLOP/s on a CPU core
# pays off from a few 1e8 flops on.
MIN_FLOPS_SAVED = 3e8

# Tests set this to PARTIAL or SPARSE to send every leaf (without side effects) down one path.
FORCE: str | None = None

PARTIAL = "partial"
SPARSE = "sparse"
PLAIN_EFFECTS = "plain: side effects"
PLAIN_LITTLE = "plain: little to hoist"
PLAIN_STENCIL = "plain: stencil"  # offsets that are not real multiples of h (a complex step)
PLAIN_TRACED = "plain: traced"  # inside the caller's jit/vmap: one program, the whole loss per probe


def _size(aval) -> int:
    return int(np.prod(getattr(aval, "shape", ()), dtype=int))


def eqn_cost(eqn) -> float:
    """Rough cost of one equation in flops (elementwise: one per output element)."""
    out = sum(_size(v.aval) for v in eqn.outvars)
    name = eqn.primitive.name
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * out * math.prod(lhs[d] for d in lhs_contract)
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
        return 2.0 * out * math.prod(rhs) / max(1, out_features)
    inner = sum(jaxpr_cost(j) for j in _jaxpr.subjaxprs(eqn))
    if inner:
        return inner * eqn.params.get("length", 1) + out
    return float(out)


def jaxpr_cost(jaxpr) -> float:
    return sum(eqn_cost(e) for e in jaxpr.eqns)


def sparse_cost(jaxpr, k, mark) -> float:
    """Estimated cost of one sparse evaluation, from the jaxpr it traces to (shapes only)."""
    aval = jaxpr.invars[k].aval
    idx = [jax.ShapeDtypeStruct((), jnp.int32)] * aval.ndim
    value = jax.ShapeDtypeStruct((), aval.dtype)
    base = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in _jaxpr.variables(jaxpr)]
    return jaxpr_cost(jax.make_jaxpr(_sparse.sparse_loss(jaxpr, k, mark))(idx, value, base).jaxpr)


def choose(jaxpr, k, mark, total, stencil, evals) -> str:
    """The path of input k of `jaxpr` (a checked leaf): PARTIAL, SPARSE or a plain reason."""
    if jaxpr.effects:
        return PLAIN_EFFECTS
    if not all(isinstance(o, (int, float)) for o in stencil.offsets):
        return PLAIN_STENCIL
    if FORCE is not None:
        return FORCE
    if evals * total < MIN_FLOPS_SAVED:  # even skipping the whole loss would not pay for a compile
        return PLAIN_LITTLE
    keep = 1 - MIN_SAVING
    kept = sum(eqn_cost(e) for e, m in zip(jaxpr.eqns, mark, strict=True) if m)
    path, cost = (PARTIAL, kept) if total > 0 and kept <= keep * total else (PLAIN_LITTLE, total)
    if evals * (total - cost) < MIN_FLOPS_SAVED:  # not enough work saved to pay for a compile
        path, cost = PLAIN_LITTLE, total
    if any(mark) and all(jaxpr.invars[k].aval.shape):  # a leaf of size 0 has no entry to change
        sparse = sparse_cost(jaxpr, k, mark)
        if sparse <= keep * cost and evals * (total - sparse) >= MIN_FLOPS_SAVED:
            path = SPARSE
    return path
