"""Assert helpers for test suites: run a check, raise `jgc.GradCheckError` with the report.

Every helper returns the `jgc.GradCheck` when it passed; `GradCheckError` is an
`AssertionError`, so pytest shows the jgc report as the failure message. Checks
over several seeds are vmapped: one compilation, one batched report that names the
failing seeds and shows the worst one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from . import _jit, _validate
from ._check import check_grad, raise_unless_passed
from ._hvp import check_hvp
from ._layers import check_jvp, check_vjp
from ._result import GradCheck
from ._typing import PyTree

__all__ = ["assert_grad_seeds", "assert_hvp", "assert_jvp", "assert_passed", "assert_vjp"]


def assert_passed(res: GradCheck) -> GradCheck:
    """Raise `jgc.GradCheckError` (message: the report) unless every check in `res` passed.

    Examples:
      >>> import jax.numpy as jnp, jgc, jgc.testing
      >>> res = jgc.check_grad(lambda p: jnp.sum(p ** 2), lambda p: 2 * p, jnp.ones(3))
      >>> jgc.testing.assert_passed(res) is res
      True
    """
    __tracebackhide__ = True
    if not isinstance(res, GradCheck):
        raise TypeError(f"assert_passed expects a jgc.GradCheck; received {type(res).__name__}.")
    return raise_unless_passed(res)


def _seed_keys(key, n_seeds: int, caller: str, name: str = "n_seeds"):
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, (int, np.integer)) or n_seeds < 1:
        raise ValueError(f"{name} must be a positive int; received {n_seeds!r}.")
    n = int(n_seeds)
    if key is None:  # in one compiled program: no eager op, no transfer (jax_transfer_guard)
        return _jit.program(("seed_keys", n), lambda: jax.random.split(jax.random.key(0), n))()
    _validate.key(key, where=f"jgc.testing.{caller}")
    return _jit.program(("seed_keys", n, "given"), lambda k: jax.random.split(k, n))(key)


def assert_grad_seeds(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    init_fn: Callable[[jax.Array], PyTree],
    n_seeds: int,
    *args,
    key: jax.Array | None = None,
    **kwargs,
) -> GradCheck:
    """`jgc.check_grad` at `n_seeds` random initialisations `init_fn(key_i)`, vmapped.

    Args:
      loss_fn, grad_fn, *args: as in `jgc.check_grad`.
      init_fn: `init_fn(key) -> params`; may return equinox Modules or flax trees
        (it runs inside `jax.vmap`, its non-array leaves stay static).
      n_seeds: number of initialisations.
      key: the key split into the seeds' keys; `None` means `jax.random.key(0)`.
      **kwargs: passed to `jgc.check_grad` (eps, tol, method, autodiff, ...).

    Returns:
      The batched `jgc.GradCheck` (leading axis: seed).

    Raises:
      GradCheckError: when any seed fails or is inconclusive; the message is the batched report.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc.testing
      >>> init = lambda k: {"w": jax.random.normal(k, (3,))}
      >>> res = jgc.testing.assert_grad_seeds(lambda p: jnp.sum(p["w"] ** 2), lambda p: {"w": 2 * p["w"]}, init, 4)
      >>> res.passed.shape
      (4,)
    """
    __tracebackhide__ = True
    keys = _seed_keys(key, n_seeds, "assert_grad_seeds")
    res = _validate.vmapped("loss_fn", jax.vmap(lambda k: check_grad(loss_fn, grad_fn, init_fn(k), *args, **kwargs)), keys)
    return assert_passed(res)


def assert_vjp(f, vjp_fn, *primals, key: jax.Array | None = None, n_seeds: int = 1, **kwargs) -> GradCheck:
    """`jgc.check_vjp` with `n_seeds` random cotangents (vmapped when more than one)."""
    __tracebackhide__ = True
    keys = _seed_keys(key, n_seeds, "assert_vjp")
    if n_seeds == 1:
        return assert_passed(check_vjp(f, vjp_fn, *primals, key=keys[0], **kwargs))
    return assert_passed(jax.vmap(lambda k: check_vjp(f, vjp_fn, *primals, key=k, **kwargs))(keys))


def assert_jvp(f, jvp_fn, *primals, key: jax.Array | None = None, n_seeds: int = 1, **kwargs) -> GradCheck:
    """`jgc.check_jvp` with `n_seeds` sets of random tangents (vmapped when more than one)."""
    __tracebackhide__ = True
    keys = _seed_keys(key, n_seeds, "assert_jvp")
    if n_seeds == 1:
        return assert_passed(check_jvp(f, jvp_fn, *primals, key=keys[0], **kwargs))
    return assert_passed(jax.vmap(lambda k: check_jvp(f, jvp_fn, *primals, key=k, **kwargs))(keys))


def assert_hvp(loss_fn, hvp_fn, params, *args, key: jax.Array | None = None, **kwargs) -> GradCheck:
    """`jgc.check_hvp` (every coordinate when `key` is None, else random vectors)."""
    __tracebackhide__ = True
    return assert_passed(check_hvp(loss_fn, hvp_fn, params, *args, key=key, **kwargs))
