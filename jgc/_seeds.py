"""`jgc.check_seeds` and `jgc.check_snapshots`: one compiled, vmapped check over many points."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _check, _engine, _jit, _stencils, _tree, _validate
from ._locate import locate
from ._result import GradCheck
from ._typing import PyTree


@dataclasses.dataclass(frozen=True)
class _Batched:
    """A batched check (hashable, so its compiled program is cached on it)."""

    check: _jit.Ref
    loss_fn: _jit.Ref
    grad_fn: _jit.Ref | None
    init_fn: _jit.Ref | None
    static: tuple  # static part of args
    options: tuple  # static keyword arguments of `check`, as sorted items

    def __call__(self, batch, dynamic, arrays):
        args = _jit.combine(dynamic, self.static)
        grad_fn = None if self.grad_fn is None else self.grad_fn()

        def one(x):
            params = x if self.init_fn is None else _validate.trace("init_fn", self.init_fn(), x)
            return self.check()(self.loss_fn(), grad_fn, params, *args, **dict(self.options), **arrays)

        return _validate.vmapped("loss_fn", jax.vmap(one), batch)


def _default_chunk(init_fn, batch, size: int, method: str) -> int:
    """The engine's default chunk with its memory budget shared by the points: the vmap over
    `size` points multiplies a chunk's memory by `size`, so the perturbed copies of θ of
    all points together stay within one check's budget (benchmarks/seeds.py)."""
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], x.dtype), batch)  # shapes only: no op
    params = jax.eval_shape(init_fn, one) if init_fn is not None else one
    floats = [x for x in jax.tree_util.tree_leaves(params) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    n = max(1, sum(math.prod(x.shape) for x in floats))
    m = _stencils.get(method).evals_per_probe
    return _engine.chunk_size(n * size, n, m)


_HOST_SIDE = (
    "{caller}(check=jgc.locate): locate is host-side (its recursion depends on the values it measures), "
    "so it cannot run under the vmap over {points}. Run {caller} with check=jgc.check_grad (the default) "
    "or check=jgc.check_directions, then jgc.locate on the params of a failing {point}{how}."
)


def _run(check, loss_fn, grad_fn, init_fn, batch, size, args, check_kwargs, caller="check_seeds"):
    check = _check.check_grad if check is None else check
    _validate.callable_("check", check)
    if check is locate:
        seeds = caller == "check_seeds"
        how = " (init_fn(keys[i]) for seed i)" if seeds else " (jax.tree.map(lambda x: x[i], stacked_params))"
        points, point = ("seeds", "seed") if seeds else ("snapshots", "snapshot")
        raise TypeError(_HOST_SIDE.format(caller=caller, points=points, point=point, how=how))
    _validate.live(tuple(args), "args")
    _validate.callable_("loss_fn", loss_fn)
    _validate.callable_("grad_fn", grad_fn, allow_none=True)
    if check_kwargs.get("chunk_size") is None:
        method = check_kwargs.get("method", "central")
        _stencils.get(method)
        check_kwargs = {**check_kwargs, "chunk_size": _default_chunk(init_fn, batch, size, method)}
    arrays = {k: v for k, v in check_kwargs.items() if isinstance(v, jax.Array)}
    options = tuple(sorted((k, v) for k, v in check_kwargs.items() if k not in arrays))
    try:
        hash(options)
    except TypeError as e:
        raise TypeError(f"check_kwargs must be JAX arrays or hashable values; received {dict(options)!r}.") from e
    dynamic, static = _jit.partition(tuple(args))
    ref = lambda f: None if f is None else _jit.Ref(f)  # noqa: E731
    spec = _Batched(_jit.Ref(check), _jit.Ref(loss_fn), ref(grad_fn), ref(init_fn), static, options)
    if _jit.is_traced((batch, dynamic, arrays)):
        return spec(batch, dynamic, arrays)
    # host (NumPy) arrays go to the device explicitly, once (jax_transfer_guard)
    return _jit.program(("seeds", spec), spec)(*_engine.to_device((batch, dynamic, arrays)))


def _stacked_size(name: str, tree) -> int:
    keyed = jax.tree_util.tree_flatten_with_path(tree)[0]
    leaves = [x for _, x in keyed]
    for path, x in keyed:  # a leaf without a leading axis: a Python number, a string, a scalar
        if not _tree.is_array(x) or np.ndim(x) == 0:
            what = f"a {type(x).__name__} ({x!r})" if not _tree.is_array(x) else f"a scalar array ({_tree.dtype_name(x)})"
            others = [np.shape(y)[0] for y in leaves if _tree.is_array(y) and np.ndim(y)]
            n = others[0] if others else "n"
            raise ValueError(
                f"check_snapshots: {name}{jax.tree_util.keystr(path)} is {what}, with no leading snapshot axis; every "
                f"leaf of {name} must be an array stacked along a leading axis of the same length (here {n}). "
                f"Stack it (e.g. jnp.full(({n},), value)) or, if it is the same for every snapshot, pass it in args."
            )
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if not leaves or len(sizes) != 1 or 0 in sizes:
        shapes = {jax.tree_util.keystr(p): np.shape(x) for p, x in keyed}
        raise ValueError(
            f"{name} must be stacked along a leading axis of the same nonzero length on every leaf; received leaf shapes {shapes}."
        )
    _validate.live(tree, name)
    return sizes.pop()


def check_seeds(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    init_fn: Callable[[jax.Array], PyTree],
    keys: jax.Array,
    *args,
    check: Callable[..., GradCheck] | None = None,
    **check_kwargs,
) -> GradCheck:
    """Check the gradient at `init_fn(key)` for every key, in one compiled, vmapped call.

    Args:
      loss_fn, grad_fn, *args: as in `jgc.check_grad`; `args` are shared by all seeds.
      init_fn: `init_fn(key) -> params`; called under `jax.vmap`, so it must return a
        pytree of arrays (the same structure for every key).
      keys: a batch of PRNG keys, e.g. `jax.random.split(jax.random.key(0), 16)`.
      check: the check to run per seed: `jgc.check_grad` (default) or `jgc.check_directions`
        (or any function with their signature).
      **check_kwargs: passed to `check` (eps, tol, method, chunk_size, num, coords, key...).
        JAX arrays (a `key=` for the probes) are shared by all seeds. The default
        `chunk_size` shares one check's memory budget among the seeds.

    Returns:
      The batched result: every field has a leading axis of len(keys). Its report says
      how many seeds failed or were inconclusive, which, and shows the worst seed in full.
      The seeds run as one traced program (vmap), so what stays unresolved for a seed is
      reported as inconclusive rather than re-measured.

    Examples:
      >>> import jax, jax.numpy as jnp, jgc
      >>> init = lambda k: {"w": jax.random.normal(k, (3,))}
      >>> loss = lambda p: jnp.sum(jnp.exp(p["w"]))
      >>> res = jgc.check_seeds(loss, lambda p: {"w": jnp.exp(p["w"])}, init, jax.random.split(jax.random.key(0), 4))
      >>> res.passed.shape, bool(res.passed.all())
      ((4,), True)
    """
    _validate.callable_("init_fn", init_fn)
    size = _validate.keys(keys, where="check_seeds")
    return _run(check, loss_fn, grad_fn, init_fn, keys, size, args, check_kwargs)


def check_snapshots(
    loss_fn: Callable[..., jax.Array],
    grad_fn: Callable[..., PyTree] | None,
    stacked_params: PyTree,
    *args,
    check: Callable[..., GradCheck] | None = None,
    **check_kwargs,
) -> GradCheck:
    """Check the gradient at every snapshot of a stacked pytree of parameters, in one call.

    `stacked_params` is a pytree like the params with a leading axis on every leaf (e.g.
    `jax.tree.map(lambda *x: jnp.stack(x), *snapshots)`); everything else is as in
    `jgc.check_seeds`. The report numbers the snapshots as "seeds".

    Examples:
      >>> import jax.numpy as jnp, jgc
      >>> snaps = {"w": jnp.array([[0.0, 1.0], [2.0, 3.0]])}
      >>> res = jgc.check_snapshots(lambda p: jnp.sum(p["w"] ** 2), lambda p: {"w": 2 * p["w"]}, snaps)
      >>> res.passed.tolist()
      [True, True]
    """
    size = _stacked_size("stacked_params", stacked_params)
    return _run(check, loss_fn, grad_fn, None, stacked_params, size, args, check_kwargs, caller="check_snapshots")
