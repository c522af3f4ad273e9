"""Convolutions with hand-written backward passes: two 1-D layers written by hand (the input
gradient is a transposed convolution), and a strided, padded 2-D layer with
`lax.conv_general_dilated`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._model import model, normal

# ---------------------------------------------------------------- two 1-D convolutions, SAME padding, written by hand

L = 8


def conv1d_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {
        "K1": normal(k[0], (2, 2, 3), dtype, 0.5),
        "b1": normal(k[1], (2,), dtype, 0.1),
        "K2": normal(k[2], (1, 2, 3), dtype, 0.5),
    }
    return params, (normal(k[3], (2, 2, L), dtype), normal(k[4], (2, 1, L), dtype))


def _conv1d(x, K):
    """SAME cross-correlation: x (N, C_in, L), K (C_out, C_in, 3) -> (N, C_out, L)."""
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1)))
    return sum(jnp.einsum("oi,nit->not", K[:, :, k], xp[:, :, k : k + x.shape[2]]) for k in range(3))


def _conv1d_kernel_grad(x, dy, first=0):
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1)))
    n = x.shape[2]
    return jnp.stack([jnp.einsum("not,nit->oi", dy[:, :, first:], xp[:, :, k + first : k + n]) for k in range(3)], axis=-1)


def conv1d_loss(p, x, c):
    h = jnp.tanh(_conv1d(x, p["K1"]) + p["b1"][None, :, None])
    return jnp.sum(c * jnp.tanh(_conv1d(h, p["K2"])))


def conv1d_grad(p, x, c, bug=None):
    h = jnp.tanh(_conv1d(x, p["K1"]) + p["b1"][None, :, None])
    y = jnp.tanh(_conv1d(h, p["K2"]))
    dy = c * (1 - y**2)
    dK2 = _conv1d_kernel_grad(h, dy)
    # the input gradient is a correlation with the flipped, transposed kernel
    K2t = jnp.swapaxes(p["K2"], 0, 1)
    dh = _conv1d(dy, K2t if bug == "input_grad_unflipped" else K2t[:, :, ::-1])
    dz = dh * (1 - h**2)
    # bug: the kernel-gradient loop starts at output position 1 (off by one)
    dK1 = _conv1d_kernel_grad(x, dz, first=1 if bug == "first_position_dropped" else 0)
    if bug == "kernel_flipped":
        dK1 = dK1[:, :, ::-1]
    return {"K1": dK1, "b1": dz.sum((0, 2)), "K2": dK2}


CONV1D = model(
    "conv1d_two_layers",
    conv1d_init,
    conv1d_loss,
    conv1d_grad,
    {
        "input_grad_unflipped": ("['K1']", "gross"),
        "first_position_dropped": ("['K1']", "gross"),
        "kernel_flipped": ("['K1']", "gross"),
    },
)

# ---------------------------------------------------------------- 2-D, stride 2, padding 1, with lax.conv_general_dilated

STRIDE = 2


def conv2d_lax_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"K": normal(k[0], (2, 2, 3, 3), dtype, 0.4), "b": normal(k[1], (2,), dtype, 0.1)}
    return params, (normal(k[2], (2, 2, 6, 6), dtype), normal(k[3], (2, 2, 3, 3), dtype))


def _conv2d(x, K):
    return lax.conv_general_dilated(x, K, (STRIDE, STRIDE), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))


def conv2d_lax_loss(p, x, c):
    return jnp.sum(c * jnp.tanh(_conv2d(x, p["K"]) + p["b"][None, :, None, None]))


def conv2d_lax_grad(p, x, c, bug=None):
    y = jnp.tanh(_conv2d(x, p["K"]) + p["b"][None, :, None, None])
    dy = c * (1 - y**2)
    Ho, Wo = dy.shape[2:]
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    s = 1 if bug == "stride_ignored" else STRIDE
    dK = jnp.stack(
        [
            jnp.stack([jnp.einsum("noyx,niyx->oi", dy, xp[:, :, a : a + s * Ho : s, b : b + s * Wo : s]) for b in range(3)], -1)
            for a in range(3)
        ],
        -2,
    )
    if bug == "kernel_flipped":
        dK = dK[:, :, ::-1, ::-1]
    if bug == "in_out_swapped":
        dK = jnp.swapaxes(dK, 0, 1)
    db = dy.sum((0, 2, 3))
    return {"K": dK, "b": db / (Ho * Wo) if bug == "bias_mean_over_pixels" else db}


CONV2D_LAX = model(
    "conv2d_lax_strided",
    conv2d_lax_init,
    conv2d_lax_loss,
    conv2d_lax_grad,
    {
        "stride_ignored": ("['K']", "gross"),
        "kernel_flipped": ("['K']", "gross"),
        "in_out_swapped": ("['K']", "gross"),
        "bias_mean_over_pixels": ("['b']", "gross"),
    },
)

CONV = [CONV1D, CONV2D_LAX]
# lax.conv_general_dilated refuses a complex kernel with real data; cast, it multiplies complex numbers with
# three real products (a Gauss trick) whose cancellation loses the 1e-20 imaginary step: no complex step
NOT_COMPLEX_SAFE = {CONV2D_LAX.name}
