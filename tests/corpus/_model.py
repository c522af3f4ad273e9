"""The registry entry and small helpers shared by the corpus modules."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Model(NamedTuple):
    name: str
    init: Callable[[jax.Array, Any], tuple[Any, tuple]]
    loss_fn: Callable[..., jax.Array]
    grad_fn: Callable[..., Any]
    bugs: dict[str, tuple[Callable[..., Any], str]]
    # bug name -> size category ("gross", "moderate", "subtle"), from its measured
    # relative error on the wrong leaf (`bug_size`); a bug without a tag is measured
    tags: Mapping[str, str] = types.MappingProxyType({})


# Size categories of a bug, by the relative error it makes on its wrong leaf
# (‖bad − true‖ / (‖bad‖ + ‖true‖), true from jax.grad in float64): gross ≥ 1e-2,
# moderate in [1e-3, 1e-2), subtle < 1e-3.
CATEGORIES = ("gross", "moderate", "subtle")


def size_category(rel: float) -> str:
    return "gross" if rel >= 1e-2 else "moderate" if rel >= 1e-3 else "subtle"


def bug_size(m: Model, bug: str, seed: int = 0) -> float:
    """Measured relative error of `bug` on its wrong leaf at `m.init(jax.random.key(seed), float64)`.

    The true gradient is `jax.grad(m.loss_fn)` in float64 (also for models whose loss
    computes in float32 inside: their true gradient is then float32-accurate only).
    """
    bad_fn, leaf = m.bugs[bug]
    with jax.enable_x64(True):
        params, args = m.init(jax.random.key(seed), jnp.float64)
        true = jax.grad(m.loss_fn)(params, *args)
        bad = bad_fn(params, *args)
        pick = lambda tree: next(x for k, x in jax.tree_util.tree_flatten_with_path(tree)[0] if jax.tree_util.keystr(k) == leaf)  # noqa: E731
        t, b = (jnp.ravel(jnp.asarray(pick(x), jnp.float64)) for x in (true, bad))
        return float(jnp.linalg.norm(b - t) / (jnp.linalg.norm(b) + jnp.linalg.norm(t)))


def category(m: Model, bug: str) -> str:
    """The bug's size category: its tag, or measured at seed 0 when it has none."""
    return m.tags.get(bug) or size_category(bug_size(m, bug))


def normal(key, shape, dtype, scale=1.0):
    return scale * jax.random.normal(key, shape, dtype)


def relu(z):
    """Complex-safe relu: the branch is chosen on the real part."""
    return jnp.where(jnp.real(z) > 0, z, 0)


def log_softmax(z):
    """Complex-safe log-softmax along the last axis (max taken on the real part)."""
    m = jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=-1, keepdims=True))
    return z - m - jnp.log(jnp.sum(jnp.exp(z - m), axis=-1, keepdims=True))


def softmax(z):
    return jnp.exp(log_softmax(z))


def model(name, init, loss_fn, grad, bugs):
    """A Model whose correct gradient is `grad(..., bug=None)` and whose bugs are
    `grad(..., bug=name)`; bugs maps a bug name to the leaf it makes wrong, or to
    (leaf, size category)."""
    bugs = {b: v if isinstance(v, tuple) else (v, None) for b, v in bugs.items()}
    return Model(
        name,
        init,
        loss_fn,
        functools.partial(grad, bug=None),
        {b: (functools.partial(grad, bug=b), leaf) for b, (leaf, _) in bugs.items()},
        types.MappingProxyType({b: tag for b, (_, tag) in bugs.items() if tag}),
    )


def all_variants(m: Model):
    """(loss_fn, grad_fn, names, wrong_leaves) checking the correct gradient and every bug
    of `m` in one compiled check: the variant is an int32 first argument (0 = correct,
    then the bugs in order), so `jax.vmap` over (variant, seed) needs a single compile.
    """
    names = ["correct"] + list(m.bugs)
    fns = [m.grad_fn] + [f for f, _ in m.bugs.values()]
    leaves = [None] + [leaf for _, leaf in m.bugs.values()]

    def loss_fn(params, variant, *args):
        return m.loss_fn(params, *args)

    def grad_fn(params, variant, *args):
        return jax.lax.switch(variant, [lambda p, *a, f=f: f(p, *a) for f in fns], params, *args)

    return loss_fn, grad_fn, names, leaves


def params_signature(m: Model, dtype) -> tuple:
    """The structure, shapes and dtypes of the params `m.init(key, dtype)` draws: models with
    equal signatures can share one check (`group_variants`)."""
    params = jax.eval_shape(lambda k: m.init(k, dtype)[0], jax.random.key(0))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return (treedef, tuple((x.shape, x.dtype) for x in leaves))


def group_variants(models: list[Model]):
    """`all_variants` for several models with the same `params_signature`, for one compiled check.

    Returns (loss_fn, grad_fn, names, wrong_leaves, owners): `loss_fn(params, variant,
    args_by_model)` and `grad_fn(...)` take, after the variant, one argument holding every
    model's extra arguments (a tuple with one tuple per model; model j sees only its own).
    Variant v checks the gradient `names[v]` = (model name, "correct" or bug) of model
    `models[owners[v]]`. Under `jax.lax.map` only that model's branch runs; under
    `jax.vmap` every branch does.
    """
    names, fns, leaves, owners = [], [], [], []
    for j, m in enumerate(models):
        names += [(m.name, "correct")] + [(m.name, b) for b in m.bugs]
        fns += [(j, m.grad_fn)] + [(j, f) for f, _ in m.bugs.values()]
        leaves += [None] + [leaf for _, leaf in m.bugs.values()]
        owners += [j] * (1 + len(m.bugs))
    owner_of = jnp.asarray(owners, jnp.int32)
    losses = [lambda p, a, j=j, m=m: m.loss_fn(p, *a[j]) for j, m in enumerate(models)]
    grads = [lambda p, a, j=j, f=f: f(p, *a[j]) for j, f in fns]

    def loss_fn(params, variant, args_by_model):
        return jax.lax.switch(owner_of[variant], losses, params, args_by_model)

    def grad_fn(params, variant, args_by_model):
        return jax.lax.switch(variant, grads, params, args_by_model)

    return loss_fn, grad_fn, names, leaves, owners
