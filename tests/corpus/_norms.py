"""Normalisation layers with hand-written backward passes: LayerNorm, BatchNorm, RMSNorm.

Each has gross bugs (a missing term, a mean for a sum) and subtle ones: the epsilon
left out of the backward pass or moved outside the square root, the unbiased variance
in a BatchNorm backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import model, normal

EPS = 1e-5


def _affine_init(n, d_in, d, w_scale):
    def init(key, dtype):
        k = jax.random.split(key, 5)
        params = {
            "W": normal(k[0], (d_in, d), dtype, w_scale),
            "gamma": 1 + normal(k[1], (d,), dtype, 0.2),
            "beta": normal(k[2], (d,), dtype, 0.2),
        }
        return params, (normal(k[3], (n, d_in), dtype), normal(k[4], (n, d), dtype))

    return init


def _standardise(z, axis, eps=EPS, ddof=0, eps_outside=False):
    """(z - mean) / σ along `axis`; σ = sqrt(var + eps), or sqrt(var) + eps."""
    n = z.shape[axis]
    mu = jnp.mean(z, axis=axis, keepdims=True)
    var = jnp.sum((z - mu) ** 2, axis=axis, keepdims=True) / (n - ddof)
    sigma = jnp.sqrt(var) + eps if eps_outside else jnp.sqrt(var + eps)
    return (z - mu) / sigma, sigma


def _standardise_backward(dzh, zh, sigma, axis, forgot=None):
    mean = lambda a: jnp.mean(a, axis=axis, keepdims=True)  # noqa: E731
    if forgot == "mean":
        return (dzh - zh * mean(dzh * zh)) / sigma
    if forgot == "variance":
        return (dzh - mean(dzh)) / sigma
    return (dzh - mean(dzh) - zh * mean(dzh * zh)) / sigma


# ---------------------------------------------------------------- LayerNorm (features of variance ~0.1, so eps matters a little)


def layernorm_loss(p, x, c):
    zh, _ = _standardise(x @ p["W"], -1)
    return jnp.sum(c * jnp.tanh(p["gamma"][None] * zh + p["beta"][None]))


def layernorm_grad(p, x, c, bug=None):
    z = x @ p["W"]
    zh, sigma = _standardise(z, -1)
    y = jnp.tanh(p["gamma"][None] * zh + p["beta"][None])
    dy = c * (1 - y**2)
    dgamma = (dy * zh).mean(0) if bug == "gamma_mean_not_sum" else (dy * zh).sum(0)
    if bug == "eps_omitted_backward":  # the backward recomputes σ as sqrt(var)
        zh, sigma = _standardise(z, -1, eps=0.0)
    elif bug == "eps_outside_sqrt":  # σ = sqrt(var) + eps in the backward (another library's convention)
        zh, sigma = _standardise(z, -1, eps_outside=True)
    dz = _standardise_backward(dy * p["gamma"][None], zh, sigma, -1, "variance" if bug == "forgot_variance_term" else None)
    return {"W": x.T @ dz, "gamma": dgamma, "beta": dy.sum(0)}


LAYERNORM_EPS = model(
    "layernorm_eps",
    _affine_init(3, 4, 4, 0.2),
    layernorm_loss,
    layernorm_grad,
    {
        "eps_omitted_backward": ("['W']", "subtle"),
        "eps_outside_sqrt": ("['W']", "subtle"),
        "forgot_variance_term": ("['W']", "gross"),
        "gamma_mean_not_sum": ("['gamma']", "gross"),
    },
)

# ---------------------------------------------------------------- BatchNorm over a batch of 16 (and of 512)


def batchnorm_loss(p, x, c):
    zh, _ = _standardise(x @ p["W"], 0)
    return jnp.sum(c * jnp.tanh(p["gamma"][None] * zh + p["beta"][None]))


def batchnorm_grad(p, x, c, bug=None):
    z = x @ p["W"]
    zh, sigma = _standardise(z, 0)
    y = jnp.tanh(p["gamma"][None] * zh + p["beta"][None])
    dy = c * (1 - y**2)
    dbeta = dy.mean(0) if bug == "beta_mean_not_sum" else dy.sum(0)
    dgamma = (dy * zh).sum(0)
    if bug == "unbiased_var_backward":  # the backward's statistics use 1/(m - 1)
        zh, sigma = _standardise(z, 0, ddof=1)
    dz = _standardise_backward(dy * p["gamma"][None], zh, sigma, 0, "mean" if bug == "forgot_mean_term" else None)
    return {"W": x.T @ dz, "gamma": dgamma, "beta": dbeta}


BATCHNORM_BATCH16 = model(
    "batchnorm_batch16",
    _affine_init(16, 2, 3, 0.7),
    batchnorm_loss,
    batchnorm_grad,
    {
        "unbiased_var_backward": ("['W']", "gross"),
        "forgot_mean_term": ("['W']", "gross"),
        "beta_mean_not_sum": ("['beta']", "gross"),
    },
)

# the same layer over a batch of 512: 1/(m - 1) against 1/m is now a small difference
BATCHNORM_BATCH512 = model(
    "batchnorm_batch512",
    _affine_init(512, 2, 3, 0.7),
    batchnorm_loss,
    batchnorm_grad,
    {"unbiased_var_backward": ("['W']", "subtle"), "forgot_mean_term": ("['W']", "gross")},
)

# ---------------------------------------------------------------- RMSNorm (small activations, eps = 1e-6)

RMS_EPS = 1e-6


def rmsnorm_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (3, 4), dtype, 0.05), "g": 1 + normal(k[1], (4,), dtype, 0.2)}
    return params, (normal(k[2], (3, 3), dtype), normal(k[3], (3, 4), dtype))


def _rms(z, eps=RMS_EPS):
    return jnp.sqrt(jnp.mean(z * z, axis=-1, keepdims=True) + eps)


def rmsnorm_loss(p, x, c):
    z = x @ p["W"]
    return jnp.sum(c * jnp.tanh(p["g"][None] * z / _rms(z)))


def rmsnorm_grad(p, x, c, bug=None):
    z = x @ p["W"]
    r = _rms(z)
    y = jnp.tanh(p["g"][None] * z / r)
    dy = c * (1 - y**2)
    dg = (dy * z).sum(0) if bug == "g_without_normalisation" else (dy * z / r).sum(0)
    if bug == "eps_omitted_backward":
        r = _rms(z, eps=0.0)
    du = dy * p["g"][None]
    dz = du / r if bug == "rms_as_constant" else du / r - z * jnp.mean(du * z, axis=-1, keepdims=True) / r**3
    return {"W": x.T @ dz, "g": dg}


RMSNORM = model(
    "rmsnorm",
    rmsnorm_init,
    rmsnorm_loss,
    rmsnorm_grad,
    {
        "eps_omitted_backward": ("['W']", "subtle"),
        "rms_as_constant": ("['W']", "gross"),
        "g_without_normalisation": ("['g']", "gross"),
    },
)

NORMS = [LAYERNORM_EPS, BATCHNORM_BATCH16, BATCHNORM_BATCH512, RMSNORM]
