"""Structured models: 2-D convolution, an RNN through time, LayerNorm, BatchNorm, attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import model, normal, softmax

# ---------------------------------------------------------------- 2-D convolution (valid, 3x3)


def conv_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"K": normal(k[0], (3, 3), dtype, 0.5), "b": normal(k[1], (), dtype, 0.1)}
    return params, (normal(k[2], (2, 6, 6), dtype), normal(k[3], (2, 4, 4), dtype))


def _conv(x, K):
    """Valid cross-correlation of a batch of images x (B, H, W) with a kernel K (3, 3)."""
    H, W = x.shape[1] - 2, x.shape[2] - 2
    return sum(K[a, b] * x[:, a : a + H, b : b + W] for a in range(3) for b in range(3))


def conv_loss(p, x, t):
    return jnp.sum(jnp.tanh(_conv(x, p["K"]) + p["b"]) * t)


def conv_grad(p, x, t, bug=None):
    y = jnp.tanh(_conv(x, p["K"]) + p["b"])
    dout = t * (1 - y**2)
    H, W = dout.shape[1:]
    dK = jnp.stack([jnp.stack([jnp.sum(dout * x[:, a : a + H, b : b + W]) for b in range(3)]) for a in range(3)])
    if bug == "flipped_kernel":
        dK = dK[::-1, ::-1]
    if bug == "transposed_kernel":
        dK = dK.T
    db = dout.mean() if bug == "bias_mean" else dout.sum()
    return {"K": dK, "b": db}


CONV2D = model(
    "conv2d",
    conv_init,
    conv_loss,
    conv_grad,
    {"flipped_kernel": ("['K']", "gross"), "transposed_kernel": ("['K']", "gross"), "bias_mean": ("['b']", "gross")},
)

# ---------------------------------------------------------------- RNN through time

T_STEPS = 4


def rnn_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {"W": normal(k[0], (3, 3), dtype, 0.6), "U": normal(k[1], (2, 3), dtype, 0.6), "b": normal(k[2], (3,), dtype, 0.1)}
    return params, (normal(k[3], (T_STEPS, 2, 2), dtype), normal(k[4], (T_STEPS, 2, 3), dtype))


def _rnn_states(p, xs):
    hs = [jnp.zeros((xs.shape[1], p["W"].shape[0]), xs.dtype)]
    for t in range(xs.shape[0]):
        hs.append(jnp.tanh(hs[-1] @ p["W"] + xs[t] @ p["U"] + p["b"][None]))
    return hs


def rnn_loss(p, xs, cs):
    hs = _rnn_states(p, xs)
    return sum(jnp.sum(hs[t + 1] * cs[t]) for t in range(xs.shape[0]))


def rnn_grad(p, xs, cs, bug=None):
    hs = _rnn_states(p, xs)
    dW, dU, db = jnp.zeros_like(p["W"]), jnp.zeros_like(p["U"]), jnp.zeros_like(p["b"])
    dh_next = jnp.zeros_like(hs[0])
    for t in reversed(range(xs.shape[0])):
        dh = cs[t] + dh_next
        dz = dh if bug == "forgot_tanh_derivative" else dh * (1 - hs[t + 1] ** 2)
        dW = dW + hs[t].T @ dz
        dU = dU + xs[t].T @ dz
        db = db + dz.sum(0)
        dh_next = jnp.zeros_like(dh) if bug == "truncated_bptt" else dz @ p["W"].T
    return {"W": dW.T if bug == "transposed_W" else dW, "U": dU, "b": db}


RNN = model(
    "rnn_bptt",
    rnn_init,
    rnn_loss,
    rnn_grad,
    {"truncated_bptt": ("['W']", "gross"), "transposed_W": ("['W']", "gross"), "forgot_tanh_derivative": ("['U']", "gross")},
)

# ---------------------------------------------------------------- LayerNorm and BatchNorm after a linear layer

NORM_EPS = 1e-5


def _norm_init(shape_x, shape_w, shape_t):
    def init(key, dtype):
        k = jax.random.split(key, 5)
        f = shape_w[1]
        params = {
            "W": normal(k[0], shape_w, dtype, 0.7),
            "gamma": 1 + normal(k[1], (f,), dtype, 0.2),
            "beta": normal(k[2], (f,), dtype, 0.2),
        }
        return params, (normal(k[3], shape_x, dtype), normal(k[4], shape_t, dtype))

    return init


def _normalize(z, axis):
    mu = jnp.mean(z, axis=axis, keepdims=True)
    var = jnp.mean((z - mu) ** 2, axis=axis, keepdims=True)
    return (z - mu) / jnp.sqrt(var + NORM_EPS), jnp.sqrt(var + NORM_EPS)


def _norm_backward(dzh, zh, sigma, axis, bug):
    if bug == "stats_as_constants":
        return dzh / sigma
    if bug == "forgot_mean_term":
        return (dzh - zh * jnp.mean(dzh * zh, axis=axis, keepdims=True)) / sigma
    return (dzh - jnp.mean(dzh, axis=axis, keepdims=True) - zh * jnp.mean(dzh * zh, axis=axis, keepdims=True)) / sigma


def layernorm_loss(p, x, t):
    zh, _ = _normalize(x @ p["W"], axis=-1)
    return 0.5 * jnp.sum((p["gamma"][None] * zh + p["beta"][None] - t) ** 2)


def layernorm_grad(p, x, t, bug=None):
    zh, sigma = _normalize(x @ p["W"], axis=-1)
    dy = p["gamma"][None] * zh + p["beta"][None] - t
    dgamma = dy.sum(0) if bug == "gamma_without_xhat" else (dy * zh).sum(0)
    dbeta = dy.mean(0) if bug == "beta_mean" else dy.sum(0)
    dz = _norm_backward(dy * p["gamma"][None], zh, sigma, -1, bug)
    return {"W": x.T @ dz, "gamma": dgamma, "beta": dbeta}


LAYERNORM = model(
    "layernorm",
    _norm_init((3, 4), (4, 5), (3, 5)),
    layernorm_loss,
    layernorm_grad,
    {"forgot_mean_term": ("['W']", "gross"), "gamma_without_xhat": ("['gamma']", "gross"), "beta_mean": ("['beta']", "gross")},
)


def batchnorm_loss(p, x, t):
    zh, _ = _normalize(x @ p["W"], axis=0)
    return jnp.sum(jnp.tanh(p["gamma"][None] * zh + p["beta"][None]) * t)


def batchnorm_grad(p, x, t, bug=None):
    zh, sigma = _normalize(x @ p["W"], axis=0)
    y = jnp.tanh(p["gamma"][None] * zh + p["beta"][None])
    dy = t * (1 - y**2)
    dgamma = (dy * zh).sum(0) * (2 if bug == "gamma_doubled" else 1)
    dbeta = -dy.sum(0) if bug == "beta_sign" else dy.sum(0)
    dz = _norm_backward(dy * p["gamma"][None], zh, sigma, 0, bug)
    return {"W": x.T @ dz, "gamma": dgamma, "beta": dbeta}


BATCHNORM = model(
    "batchnorm",
    _norm_init((6, 3), (3, 4), (6, 4)),
    batchnorm_loss,
    batchnorm_grad,
    {"stats_as_constants": ("['W']", "gross"), "gamma_doubled": ("['gamma']", "gross"), "beta_sign": ("['beta']", "gross")},
)

# ---------------------------------------------------------------- single-head self-attention


def attention_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {name: normal(k[i], (3, 3), dtype, 0.7) for i, name in enumerate(("Wq", "Wk", "Wv"))}
    return params, (normal(k[3], (4, 3), dtype), normal(k[4], (4, 3), dtype))


def attention_loss(p, X, T):
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = softmax(Q @ K.T / jnp.sqrt(3.0).astype(X.dtype))
    return jnp.sum((A @ V) * T)


def attention_grad(p, X, T, bug=None):
    s = jnp.sqrt(3.0).astype(X.dtype)
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = softmax(Q @ K.T / s)
    dA = T @ V.T
    dV = A.T @ T
    dS = A * dA if bug == "softmax_no_subtract" else A * (dA - jnp.sum(dA * A, axis=-1, keepdims=True))
    dQ = dS @ K * (1 if bug == "forgot_scale" else 1 / s)
    dK = dS.T @ Q / s
    if bug == "swap_qk":
        dQ = dS.T @ K / s
    dWv = X.T @ dV
    return {"Wq": X.T @ dQ, "Wk": X.T @ dK, "Wv": dWv.T if bug == "transposed_Wv" else dWv}


ATTENTION = model(
    "attention",
    attention_init,
    attention_loss,
    attention_grad,
    {
        "forgot_scale": ("['Wq']", "gross"),
        "softmax_no_subtract": ("['Wq']", "gross"),
        "swap_qk": ("['Wq']", "gross"),
        "transposed_Wv": ("['Wv']", "gross"),
    },
)

STRUCTURED = [CONV2D, RNN, LAYERNORM, BATCHNORM, ATTENTION]
