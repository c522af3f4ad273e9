"""Second order: a hand-written Hessian-vector product against finite differences of the gradient.

The engine runs on the gradient g(θ) (a vector-valued function of θ) along probe
vectors v — every coordinate (the full Hessian, column by column) or a few random
directions — so `(g(θ + h v) − g(θ − h v)) / 2h ≈ H v` is compared with `hvp_fn`
leaf by leaf, like a first-order check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _engine, _probes, _stencils, _tree
from ._layers import _check_key, _tangents
from ._result import GradCheck
from ._typing import PyTree


@dataclasses.dataclass(frozen=True)
class _HVPSpec:
    loss_fn: Callable
    hvp_fn: Callable
    grad_fn: Callable | None
    method: str
    chunk_size: int | None
    num_vectors: int | None  # None: every coordinate (full Hessian)

    def __call__(self, params, args, eps, tol):
        key, args = args[0], args[1:]
        lay = _tree.layout(params)
        stencil = _stencils.get(self.method)
        theta = _tree.ravel(lay, params)
        if eps is None:
            eps = _stencils.default_eps(lay.low_dtype, self.method)
        if self.num_vectors is None:
            num_probes, probe = lay.n, _probes.coordinates(theta, eps)
        else:
            num_probes = self.num_vectors
            probe = _probes.leaf_directions(theta, eps, np.zeros(lay.n, np.int32), 1, num_probes, key)

        if self.grad_fn is None:
            _check._check_loss_output(jax.eval_shape(lambda: self.loss_fn(params, *args)))
            grad = jax.grad(_check._loss_of_theta(self.loss_fn, lay, params, args))
        else:

            def grad(theta):
                g = self.grad_fn(_tree.unravel(lay, theta, params), *args)
                _check._check_grad_tree(lay, g)
                return _tree.ravel(lay, g)

        numeric, _, num_evals = _engine.directional_derivatives(grad, theta, probe, num_probes, stencil, self.chunk_size)

        def rule(i):
            d, _ = probe(i)
            out = self.hvp_fn(params, _tangents(lay, d, params), *args)
            _check._check_grad_tree(lay, out, name="hvp_fn")
            return _tree.ravel(lay, out)

        batch = self.chunk_size or _engine.default_chunk_size(theta.size, num_probes, stencil)
        analytic = jax.lax.map(rule, jnp.arange(num_probes), batch_size=batch).astype(numeric.dtype)
        out_lay = _by_probe_layout(lay, num_probes)
        return _check._compare(
            out_lay, _by_leaf(numeric, lay), _by_leaf(analytic, lay), eps, tol, num_evals, self.method, check="check_hvp"
        )


def _by_probe_layout(lay: _tree.Layout, num_probes: int) -> _tree.Layout:
    """The params' layout with a leading probe axis on every checked leaf."""
    shapes = tuple((num_probes, *s) if c else s for s, c in zip(lay.shapes, lay.checked, strict=True))
    return dataclasses.replace(lay, shapes=shapes)


def _by_leaf(values: jax.Array, lay: _tree.Layout) -> jax.Array:
    """(probes, n) → flat, leaf by leaf, each leaf as (probe, *leaf shape)."""
    return jnp.concatenate([values[:, o : o + s].reshape(-1) for o, s in zip(lay.offsets, lay.sizes, strict=True)])


def check_hvp(
    loss_fn: Callable[..., jax.Array],
    hvp_fn: Callable[..., PyTree],
    params: PyTree,
    *args,
    key: jax.Array | None = None,
    grad_fn: Callable[..., PyTree] | None = None,
    num_vectors: int = 4,
    eps: float | None = None,
    tol: float | None = None,
    method: str = "central",
    chunk_size: int | None = None,
) -> GradCheck:
    """Check a hand-written Hessian-vector product against finite differences of the gradient.

    With `key`, `num_vectors` random vectors v (Gaussian, scaled to max |v_j| = 1) are
    drawn; with `key=None` every coordinate vector e_j is used, which checks the
    whole Hessian column by column (n² numbers: small models only). For each v,
    `(g(θ + h v) − g(θ − h v)) / 2h` (for "central"), with g the gradient, is
    compared with `hvp_fn(params, v, *args)`. Each leaf of the result has a
    leading probe axis: `numeric[...]['W'][k]` is the `['W']` block of H·v_k, so a
    failure names the leaf of the Hessian-vector product that is wrong (and, with
    `key=None`, the worst index (j, ...) says which column e_j).

    Args:
      loss_fn: `loss_fn(params, *args) -> scalar`; used for the gradient when
        `grad_fn` is None.
      hvp_fn: `hvp_fn(params, v, *args) -> pytree` like `params`; `v` has the
        structure of `params` (zeros on non-float array leaves; non-array leaves
        kept as they are).
      params: pytree of parameters; floating-point leaves are checked.
      *args: passed unchanged to `loss_fn`, `grad_fn` and `hvp_fn`.
      key: PRNG key for random vectors; `None` checks every coordinate.
      grad_fn: `grad_fn(params, *args) -> pytree` like `params`; `None` uses
        `jax.grad(loss_fn)`.
      num_vectors: how many random vectors (ignored when `key` is None).
      eps, tol, method, chunk_size: as in `jgc.check_grad` (for random vectors the
        step is eps·max(1, max |θ_j|)).

    Returns:
      A `jgc.GradCheck`; `num_evals` counts gradient evaluations.

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> loss = lambda p: jnp.sum(p["w"] ** 3)
      >>> hvp = lambda p, v: {"w": 6 * p["w"] * v["w"]}
      >>> bool(jgc.check_hvp(loss, hvp, {"w": jnp.array([0.5, -1.0])}).passed)
      True
    """
    _check._validate(loss_fn, grad_fn, method, eps, tol, chunk_size)
    _check._check_callable("hvp_fn", hvp_fn)
    if key is not None:
        _check_key(key)
        if isinstance(num_vectors, bool) or not isinstance(num_vectors, (int, np.integer)) or num_vectors < 1:
            raise ValueError(f"num_vectors must be a positive int; received {num_vectors!r}.")
    params = _check._prepare(params)
    _tree.layout(params)
    spec = _HVPSpec(loss_fn, hvp_fn, grad_fn, method, chunk_size, None if key is None else int(num_vectors))
    return _check._call(spec, params, (key, *args), eps=eps, tol=tol)
