"""CS231n-style layer pairs in plain NumPy: `*_forward(...) -> (out, cache)`, `*_backward(dout,
cache) -> gradients`, each with a planted bug of the kind students make (`bug=True`).

Used by tests/test_numpy.py and benchmarks/numpy_layers.py. The naive loops are the course's own
(conv, max-pool): the point is to check the code people write, as it is.
"""

from __future__ import annotations

import functools

import numpy as np

# ---------------------------------------------------------------- affine


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache, bug=False):
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = np.mean(dout, axis=0) if bug else np.sum(dout, axis=0)  # bug: mean instead of sum
    return dx, dw, db


# ---------------------------------------------------------------- relu


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache, bug=False):
    x = cache
    return dout.copy() if bug else dout * (x > 0)  # bug: the mask forgotten


# ---------------------------------------------------------------- batchnorm (train mode)


def batchnorm_forward(x, gamma, beta, bn_param):
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    out = gamma * xhat + beta
    bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mu  # the course writes into bn_param
    bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    return out, (xhat, gamma, std)


def batchnorm_backward(dout, cache, bug=False):
    xhat, gamma, std = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    if bug:  # bug: the variance's dependence on x forgotten
        dx = (dxhat - dxhat.mean(axis=0)) / std
    else:
        dx = (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (N * std)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- convolution (naive loops)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache, bug=False):
    x, w, b, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    hs, ws = i * stride, j * stride
                    dw[f] += xp[n, :, hs : hs + HH, ws : ws + WW] * dout[n, f, i, j]
                    dxp[n, :, hs : hs + HH, ws : ws + WW] += w[f] * dout[n, f, i, j]
    dx = dxp[:, :, :H, :W] if bug else dxp[:, :, pad : pad + H, pad : pad + W]  # bug: the padding cropped at one side
    return dx, dw, db


# ---------------------------------------------------------------- max-pool (naive loops)


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * s : i * s + ph, j * s : j * s + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache, bug=False):
    x, pool_param = cache
    ph, pw, s = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    _, _, Ho, Wo = dout.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * s : i * s + ph, j * s : j * s + pw]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    if bug:  # bug: overlapping windows overwrite instead of accumulating
                        dx[n, c, i * s + a, j * s + b] = dout[n, c, i, j]
                    else:
                        dx[n, c, i * s + a, j * s + b] += dout[n, c, i, j]
    return dx


# ---------------------------------------------------------------- one RNN step


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache, bug=False):
    x, prev_h, Wx, Wh, next_h = cache
    dtanh = dnext_h * (1 - next_h) if bug else dnext_h * (1 - next_h**2)  # bug: tanh' without the square
    return dtanh @ Wx.T, dtanh @ Wh.T, x.T @ dtanh, prev_h.T @ dtanh, dtanh.sum(axis=0)


# ---------------------------------------------------------------- the cases


def case(name: str, dtype=np.float64, seed: int = 0):
    """(forward, backward, buggy backward, inputs, the leaves the bug is in) of one layer, small."""
    rng = np.random.RandomState(seed)

    def r(*shape, scale=1.0):
        return (scale * rng.randn(*shape)).astype(dtype)

    if name == "affine":
        inputs, f, b, bad = (r(4, 2, 3), r(6, 5), r(5)), affine_forward, affine_backward, {"b"}
    elif name == "relu":
        inputs, f, b, bad = (r(4, 5),), relu_forward, relu_backward, {"x"}
    elif name == "batchnorm":
        inputs = (r(6, 4, scale=2.0) + 1, 1 + r(4, scale=0.3), r(4), {"mode": "train", "eps": 1e-5})
        f, b, bad = batchnorm_forward, batchnorm_backward, {"x"}
    elif name == "conv":
        inputs = (r(1, 2, 4, 4), r(2, 2, 3, 3), r(2), {"stride": 1, "pad": 1})
        f, b, bad = conv_forward_naive, conv_backward_naive, {"x"}
    elif name == "maxpool":
        inputs = (r(2, 2, 4, 4), {"pool_height": 2, "pool_width": 2, "stride": 1})
        f, b, bad = max_pool_forward_naive, max_pool_backward_naive, {"x"}
    elif name == "rnn_step":
        inputs = (r(3, 4), r(3, 5), r(4, 5, scale=0.5), r(5, 5, scale=0.5), r(5))
        f, b, bad = rnn_step_forward, rnn_step_backward, {"x", "prev_h", "Wx", "Wh", "b"}
    else:
        raise ValueError(name)
    return f, b, functools.partial(b, bug=True), inputs, bad


LAYERS = ("affine", "relu", "batchnorm", "conv", "maxpool", "rnn_step")
