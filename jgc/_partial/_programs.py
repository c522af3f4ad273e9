"""The programs the engine compiles for the leaves that leave the plain engine.

Each is a frozen dataclass whose fields (the loss's reference, the layout, the static part
of the params, the leaf, the traced jaxpr's signature) are what its compiled program
depends on, so the jit plumbing (`jgc/_jit.py`) keys programs by it; the traced jaxpr
itself is carried but not compared.

- `Base`: every variable of the traced jaxpr at θ, in `_jaxpr.variables` order (one
  program per loss; the args' values, the jaxpr's constants, flow in);
- `LeafFun`: J of checked leaf k's flat values, the downstream equations only (the
  partial path; run by `_engine.chunk_function`);
- `EntryFun`: J of (multi-index, new value) of one entry of checked leaf k, the change
  propagated as a box (the sparse path; run by `_engine.entry_chunk_function`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from .. import _jaxpr, _jit, _tree, _validate
from . import _sparse, _split


@dataclasses.dataclass(frozen=True)
class Base:
    """Every variable of the traced jaxpr at θ, in `_jaxpr.variables` order (one program per loss)."""

    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    sig: str  # the traced jaxpr: a program compiled for one is never reused for another
    traced: _split.Traced = dataclasses.field(compare=False, hash=False)

    def __call__(self, theta, dynamic, consts):
        params, _ = _jit.combine(dynamic, self.static)
        p = _tree.unravel(self.lay, theta, params)
        leaves = self.lay.treedef.flatten_up_to(p)
        base = _split.base_values(self.traced, [leaves[i] for i in self.lay.checked_index], consts)
        return [base[v] for v in _jaxpr.variables(self.traced.closed.jaxpr)]


@dataclasses.dataclass(frozen=True)
class _OfLeaf:
    """What a program for checked leaf k depends on (the loss, the layout, the static params, k, the jaxpr)."""

    loss: _jit.Ref
    lay: _tree.Layout
    static: tuple
    k: int
    sig: str
    traced: _split.Traced = dataclasses.field(compare=False, hash=False)


@dataclasses.dataclass(frozen=True)
class LeafFun(_OfLeaf):
    """J of checked leaf k's flat values (the engine's function for a leaf on the partial path)."""

    def __call__(self, theta_k, base_list):
        jaxpr = self.traced.closed.jaxpr
        base = dict(zip(_jaxpr.variables(jaxpr), base_list, strict=True))
        out = _validate.loss_output(_split.leaf_loss(self.traced, base, self.k)(theta_k))  # a constant: a Literal's value
        return jnp.real(out).astype(theta_k.dtype)


@dataclasses.dataclass(frozen=True)
class EntryFun(_OfLeaf):
    """J of (multi-index, new value) of one entry of checked leaf k (the sparse path)."""

    def __call__(self, idx, value, base_list):
        jaxpr = self.traced.closed.jaxpr
        run = _sparse.sparse_loss(jaxpr, self.k, self.traced.marks[self.k])
        return jnp.real(run(idx, value, list(base_list)))
