"""Checking a hand-written backward pass through inverted dropout.

In JAX the dropout mask comes from an explicit PRNG key: pass the key in `*args` and
the loss and the gradient see the same mask at every evaluation, so finite
differences are meaningful. jgc checks that the loss is deterministic at fixed θ and
fails with advice when it is not (for example a mask drawn from NumPy's global RNG).

Run: python examples/dropout.py
"""

import jax
import jax.numpy as jnp
import numpy as np

import jgc

KEEP = 0.8  # keep probability


def init(key, dtype=jnp.float32):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    params = {
        "W1": 0.5 * jax.random.normal(k1, (4, 8), dtype),
        "b1": jnp.zeros(8, dtype),
        "W2": 0.5 * jax.random.normal(k2, (8, 2), dtype),
    }
    x = jax.random.normal(k3, (16, 4), dtype)
    y = jax.random.normal(k4, (16, 2), dtype)
    return params, x, y, k5


def mask_of(key, shape, dtype):
    return jax.random.bernoulli(key, KEEP, shape).astype(dtype)


def loss(params, x, y, key):
    """MSE of a one-hidden-layer tanh network with inverted dropout on the hidden layer."""
    h = jnp.tanh(x @ params["W1"] + params["b1"][None])
    h = h * mask_of(key, h.shape, h.dtype) / KEEP
    return 0.5 * jnp.mean(jnp.sum((h @ params["W2"] - y) ** 2, axis=1))


def grad(params, x, y, key, forget=None):
    """The hand-written backward pass; `forget="mask"` or `"scale"` plants a bug."""
    h = jnp.tanh(x @ params["W1"] + params["b1"][None])
    mask = mask_of(key, h.shape, h.dtype)
    hd = h * mask / KEEP
    dout = (hd @ params["W2"] - y) / x.shape[0]
    dhd = dout @ params["W2"].T
    if forget == "mask":
        dh = dhd / KEEP
    elif forget == "scale":
        dh = dhd * mask
    else:
        dh = dhd * mask / KEEP
    dz = dh * (1 - h**2)
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": hd.T @ dout}


def grad_forgot_mask(params, x, y, key):
    return grad(params, x, y, key, forget="mask")


def grad_forgot_scale(params, x, y, key):
    return grad(params, x, y, key, forget="scale")


def loss_with_global_rng(params, x, y, key):
    """The mistake jgc detects: a mask that changes between evaluations (key ignored)."""
    h = jnp.tanh(x @ params["W1"] + params["b1"][None])
    h = h * jnp.asarray(np.random.rand(*h.shape) < KEEP, h.dtype) / KEEP
    return 0.5 * jnp.mean(jnp.sum((h @ params["W2"] - y) ** 2, axis=1))


def main():
    params, x, y, key = init(jax.random.key(0))
    ok = jgc.check_grad(loss, grad, params, x, y, key)
    print(ok.report(), end="\n\n")
    no_mask = jgc.check_grad(loss, grad_forgot_mask, params, x, y, key)
    print(no_mask.report(), end="\n\n")
    no_scale = jgc.check_grad(loss, grad_forgot_scale, params, x, y, key)
    print(no_scale.report(), end="\n\n")
    random = jgc.check_grad(loss_with_global_rng, grad, params, x, y, key)
    print(random.report())
    assert bool(ok.passed)
    assert not bool(no_mask.passed) and not bool(no_mask.leaf_passed["W1"])
    assert not bool(no_scale.passed) and not bool(no_scale.leaf_passed["W1"])
    assert not bool(random.passed) and not bool(random.deterministic)


if __name__ == "__main__":
    main()
