"""The registry entry and small helpers shared by the corpus modules."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Model(NamedTuple):
    name: str
    init: Callable[[jax.Array, Any], tuple[Any, tuple]]
    loss_fn: Callable[..., jax.Array]
    grad_fn: Callable[..., Any]
    bugs: dict[str, tuple[Callable[..., Any], str]]


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
    `grad(..., bug=name)`; bugs maps a bug name to the leaf it makes wrong."""
    return Model(
        name,
        init,
        loss_fn,
        functools.partial(grad, bug=None),
        {b: (functools.partial(grad, bug=b), leaf) for b, leaf in bugs.items()},
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
