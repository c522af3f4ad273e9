"""Models for peers.py, first_call.py and gpu.py: each with a hand-written backward pass and a torch twin.

The MLPs follow the classic course's conventions: W is (out, in), b is a (out, 1) column
broadcast over the m examples, X is (features, m), tanh hidden layers, a linear output and
the loss 0.5 · Σ (out − Y)² / m. The CNN (two 3×3 `lax.conv_general_dilated` layers, NCHW,
and a dense head) and the RNN (a tanh cell through T steps of `lax.scan`, then a linear
readout of the last state) use the same loss. Every `grad` is written by hand (no JAX
autodiff); `verify(model)` compares it with `jax.grad` and the torch twin's autograd.

Nothing here changes a JAX setting: the dtype of the parameters is the default float type
of the calling process (float64 when it enabled x64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from _common import rss_mb as rss_mb  # noqa: F401  (lifetime.py, peers.py read it here too)
from jax.flatten_util import ravel_pytree


class Model(NamedTuple):
    name: str
    description: str
    loss: Callable  # loss(params, *args) -> scalar
    grad: Callable  # hand-written, same signature, returns a pytree like params
    params: Any
    args: tuple
    torch_loss: Callable  # torch_loss(dict of tensors, *tensor args) -> scalar tensor
    init: Callable | None = None  # init(key) -> params, for check_seeds


# ---------------------------------------------------------------- MLP (column convention)


def mlp_init(key, sizes, dtype=float):
    params = {}
    for layer, (k, a, b) in enumerate(zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]), start=1):
        params[f"W{layer}"] = jax.random.normal(k, (b, a), dtype) / math.sqrt(a)
        params[f"b{layer}"] = 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b, 1), dtype)
    return params


def mlp_forward(params, X):
    layers = len(params) // 2
    acts = [X]
    for layer in range(1, layers):
        acts.append(jnp.tanh(params[f"W{layer}"] @ acts[-1] + params[f"b{layer}"]))
    return params[f"W{layers}"] @ acts[-1] + params[f"b{layers}"], acts


def mlp_loss(params, X, Y):
    out, _ = mlp_forward(params, X)
    return 0.5 * jnp.sum((out - Y) ** 2) / X.shape[1]


def mlp_grad(params, X, Y):
    layers = len(params) // 2
    out, acts = mlp_forward(params, X)
    dZ = (out - Y) / X.shape[1]
    grads = {}
    for layer in range(layers, 0, -1):
        A_prev = acts[layer - 1]
        grads[f"W{layer}"] = dZ @ A_prev.T
        grads[f"b{layer}"] = jnp.sum(dZ, axis=1, keepdims=True)
        if layer > 1:
            dZ = (params[f"W{layer}"].T @ dZ) * (1 - A_prev**2)
    return grads


def mlp_torch_loss(p, X, Y):
    layers = len(p) // 2
    A = X
    for layer in range(1, layers):
        A = (p[f"W{layer}"] @ A + p[f"b{layer}"]).tanh()
    out = p[f"W{layers}"] @ A + p[f"b{layers}"]
    return 0.5 * ((out - Y) ** 2).sum() / X.shape[1]


def mlp_data(key, sizes, m, dtype=float):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (sizes[0], m), dtype), jax.random.normal(ky, (sizes[-1], m), dtype)


def mlp(name, sizes, m, dtype=float):
    init = lambda key: mlp_init(key, sizes, dtype)
    params = init(jax.random.PRNGKey(0))
    desc = f"tanh MLP {'-'.join(map(str, sizes))}, {m} examples"
    return Model(name, desc, mlp_loss, mlp_grad, params, mlp_data(jax.random.PRNGKey(1), sizes, m, dtype), mlp_torch_loss, init)


# ---------------------------------------------------------------- CNN


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID")  # NCHW, OIHW, cross-correlation like torch


def _conv_kernel_grad(x, dz):
    """dK[o, c, a, b] = Σ_{n,i,j} dz[n, o, i, j] · x[n, c, i + a, j + b]: a convolution with batch and features swapped."""
    return _conv(x.transpose(1, 0, 2, 3), dz.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def _conv_input_grad(dz, k):
    """dx[n, c, p, q] = Σ_{o,a,b} dz[n, o, p − a, q − b] · k[o, c, a, b]: a full convolution with the flipped kernel."""
    ph, pw = k.shape[2] - 1, k.shape[3] - 1
    flipped = k[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    return jax.lax.conv_general_dilated(dz, flipped, (1, 1), [(ph, ph), (pw, pw)])


def cnn_init(key, channels=(1, 8, 16), side=12, hidden=5, dtype=float):
    c0, c1, c2 = channels
    flat = c2 * (side - 4) ** 2
    ks = jax.random.split(key, 8)
    return {
        "K1": jax.random.normal(ks[0], (c1, c0, 3, 3), dtype) / math.sqrt(9 * c0),
        "c1": 0.1 * jax.random.normal(ks[1], (c1,), dtype),
        "K2": jax.random.normal(ks[2], (c2, c1, 3, 3), dtype) / math.sqrt(9 * c1),
        "c2": 0.1 * jax.random.normal(ks[3], (c2,), dtype),
        "W3": jax.random.normal(ks[4], (hidden, flat), dtype) / math.sqrt(flat),
        "b3": 0.1 * jax.random.normal(ks[5], (hidden, 1), dtype),
        "W4": jax.random.normal(ks[6], (1, hidden), dtype) / math.sqrt(hidden),
        "b4": 0.1 * jax.random.normal(ks[7], (1, 1), dtype),
    }


def cnn_forward(p, X):
    A1 = jnp.tanh(_conv(X, p["K1"]) + p["c1"][None, :, None, None])
    A2 = jnp.tanh(_conv(A1, p["K2"]) + p["c2"][None, :, None, None])
    F = A2.reshape(X.shape[0], -1).T  # (features, m)
    A3 = jnp.tanh(p["W3"] @ F + p["b3"])
    return p["W4"] @ A3 + p["b4"], (A1, A2, F, A3)


def cnn_loss(p, X, Y):
    out, _ = cnn_forward(p, X)
    return 0.5 * jnp.sum((out - Y) ** 2) / X.shape[0]


def cnn_grad(p, X, Y):
    out, (A1, A2, F, A3) = cnn_forward(p, X)
    d4 = (out - Y) / X.shape[0]
    dZ3 = (p["W4"].T @ d4) * (1 - A3**2)
    dZ2 = (p["W3"].T @ dZ3).T.reshape(A2.shape) * (1 - A2**2)
    dZ1 = _conv_input_grad(dZ2, p["K2"]) * (1 - A1**2)
    return {
        "K1": _conv_kernel_grad(X, dZ1),
        "c1": dZ1.sum((0, 2, 3)),
        "K2": _conv_kernel_grad(A1, dZ2),
        "c2": dZ2.sum((0, 2, 3)),
        "W3": dZ3 @ F.T,
        "b3": dZ3.sum(1, keepdims=True),
        "W4": d4 @ A3.T,
        "b4": d4.sum(1, keepdims=True),
    }


def cnn_torch_loss(p, X, Y):
    import torch.nn.functional as F

    A1 = (F.conv2d(X, p["K1"]) + p["c1"][None, :, None, None]).tanh()
    A2 = (F.conv2d(A1, p["K2"]) + p["c2"][None, :, None, None]).tanh()
    A3 = (p["W3"] @ A2.reshape(X.shape[0], -1).T + p["b3"]).tanh()
    return 0.5 * ((p["W4"] @ A3 + p["b4"] - Y) ** 2).sum() / X.shape[0]


def cnn(name, m, channels=(1, 8, 16), side=12, hidden=5, dtype=float):
    init = lambda key: cnn_init(key, channels, side, hidden, dtype)
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    args = (jax.random.normal(kx, (m, channels[0], side, side), dtype), jax.random.normal(ky, (1, m), dtype))
    c0, c1, c2 = channels
    desc = (
        f"CNN {c0}→{c1}→{c2} channels (3×3, VALID), {side}×{side} images, dense {c2 * (side - 4) ** 2}→{hidden}→1, {m} examples"
    )
    return Model(name, desc, cnn_loss, cnn_grad, init(jax.random.PRNGKey(0)), args, cnn_torch_loss, init)


# ---------------------------------------------------------------- RNN


def rnn_init(key, d=8, hidden=48, dtype=float):
    ks = jax.random.split(key, 5)
    return {
        "Wx": jax.random.normal(ks[0], (hidden, d), dtype) / math.sqrt(d),
        "Wh": jax.random.normal(ks[1], (hidden, hidden), dtype) / math.sqrt(hidden),
        "b": 0.1 * jax.random.normal(ks[2], (hidden, 1), dtype),
        "v": jax.random.normal(ks[3], (1, hidden), dtype) / math.sqrt(hidden),
        "c": 0.1 * jax.random.normal(ks[4], (1, 1), dtype),
    }


def rnn_forward(p, X):
    """X: (T, d, m). Returns the readout and the states h_1..h_T, (T, hidden, m)."""

    def step(h, x):
        h = jnp.tanh(p["Wx"] @ x + p["Wh"] @ h + p["b"])
        return h, h

    h0 = jnp.zeros((p["Wh"].shape[0], X.shape[2]), X.dtype)
    hT, hs = jax.lax.scan(step, h0, X)
    return p["v"] @ hT + p["c"], hs


def rnn_loss(p, X, Y):
    out, _ = rnn_forward(p, X)
    return 0.5 * jnp.sum((out - Y) ** 2) / X.shape[2]


def rnn_grad(p, X, Y):
    """Backpropagation through time, by hand, as a reversed `lax.scan`."""
    out, hs = rnn_forward(p, X)
    d = (out - Y) / X.shape[2]
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])

    def back(carry, inputs):
        dh, dWx, dWh, db = carry
        x, h, hp = inputs
        dz = dh * (1 - h**2)
        return (p["Wh"].T @ dz, dWx + dz @ x.T, dWh + dz @ hp.T, db + dz.sum(1, keepdims=True)), None

    zeros = (jnp.zeros_like(p["Wx"]), jnp.zeros_like(p["Wh"]), jnp.zeros_like(p["b"]))
    (_, dWx, dWh, db), _ = jax.lax.scan(back, (p["v"].T @ d, *zeros), (X, hs, h_prev), reverse=True)
    return {"Wx": dWx, "Wh": dWh, "b": db, "v": d @ hs[-1].T, "c": d.sum(1, keepdims=True)}


def rnn_torch_loss(p, X, Y):
    h = X.new_zeros((p["Wh"].shape[0], X.shape[2]))
    for t in range(X.shape[0]):
        h = (p["Wx"] @ X[t] + p["Wh"] @ h + p["b"]).tanh()
    return 0.5 * ((p["v"] @ h + p["c"] - Y) ** 2).sum() / X.shape[2]


def rnn(name, m, steps=15, d=8, hidden=48, dtype=float):
    init = lambda key: rnn_init(key, d, hidden, dtype)
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    args = (jax.random.normal(kx, (steps, d, m), dtype), jax.random.normal(ky, (1, m), dtype))
    desc = f"tanh RNN, {d} inputs, {hidden} hidden, {steps} steps of lax.scan, linear readout, {m} examples"
    return Model(name, desc, rnn_loss, rnn_grad, init(jax.random.PRNGKey(0)), args, rnn_torch_loss, init)


# ---------------------------------------------------------------- the benchmark's models

MLP_SIZES = {
    "mlp47": ((4, 5, 3, 1), 8),  # the classic course network's shape: 25 + 18 + 4 = 47 parameters
    "mlp8577": ((100, 64, 32, 1), 64),
    "mlp34645": ((200, 128, 64, 10, 1), 128),
}
QUICK_MLP_SIZES = {"mlp47": ((4, 5, 3, 1), 8), "mlp8577": ((12, 8, 4, 1), 8), "mlp34645": ((20, 12, 6, 3, 1), 8)}


def build(name, quick=False, dtype=float):
    """The model called `name`; `quick` gives tiny versions (same structure) to check a script runs."""
    if name in MLP_SIZES:
        sizes, m = (QUICK_MLP_SIZES if quick else MLP_SIZES)[name]
        return mlp(name, sizes, m, dtype)
    if name == "cnn":  # 1→8→16 channels on 12×12 images, dense 1024→5→1: n = 6,379
        return cnn(name, 2, (1, 2, 3), 6, 3, dtype) if quick else cnn(name, 8, dtype=dtype)
    if name == "rnn":  # 8 inputs, 48 hidden, 15 steps: n = 2,785
        return rnn(name, 4, 4, 3, 5, dtype) if quick else rnn(name, 16, dtype=dtype)
    raise ValueError(f"unknown model {name!r}; known: {[*MLP_SIZES, 'cnn', 'rnn']}")


MODELS = [*MLP_SIZES, "cnn", "rnn"]


# ---------------------------------------------------------------- helpers shared by the scripts


def jgc_kwargs(method: str) -> dict:
    """check_grad's keywords for a benchmark's jgc method: "jgc" (the defaults, partial evaluation
    where it pays) or "jgc_plain" (partial_eval=False: the whole loss for every probe)."""
    return {"partial_eval": False} if method == "jgc_plain" else {}


def num_params(params):
    return int(sum(np.size(v) for v in jax.tree_util.tree_leaves(params)))


def flat(model):
    """θ, loss of θ and hand-written gradient of θ (not jitted)."""
    theta, unravel = ravel_pytree(model.params)
    loss = lambda t: model.loss(unravel(t), *model.args)
    grad = lambda t: ravel_pytree(model.grad(unravel(t), *model.args))[0]
    return theta, loss, grad


def floor_numeric_grad(loss_of_theta, n, h, chunk):
    """The bare floor of a full check: central differences, 2n loss evaluations, `jax.vmap`ped in chunks.

    Returns an unjitted function θ -> numeric gradient. Each chunk evaluates the loss at
    θ ± h·e_i for `chunk` coordinates (2·chunk points, built inside the chunk, so memory is
    O(chunk · n)); `lax.map` runs the chunks; the last chunk is padded with the last
    coordinate (evaluated, not counted).
    """
    chunk = max(1, min(chunk, n))

    def one_chunk(theta, start):
        idx = jnp.minimum(start + jnp.arange(chunk), n - 1)
        signs = jnp.concatenate([jnp.ones(chunk), -jnp.ones(chunk)]).astype(theta.dtype)
        values = jax.vmap(lambda i, s: loss_of_theta(theta.at[i].add(s * h)))(jnp.concatenate([idx, idx]), signs)
        return (values[:chunk] - values[chunk:]) / (2 * h)

    return lambda theta: jax.lax.map(lambda s: one_chunk(theta, s), jnp.arange(0, n, chunk)).reshape(-1)[:n]


def floor_sequential_numeric_grad(loss_of_theta, n, h):
    """The same 2n evaluations one at a time in one compiled loop (lax.map, no vmap): the floor where
    batching the loss is slow (vmap of a convolution over perturbed kernels is a grouped convolution,
    which XLA:CPU runs far slower than the same number of plain ones)."""

    def one(theta, i):
        return (loss_of_theta(theta.at[i].add(h)) - loss_of_theta(theta.at[i].add(-h))) / (2 * h)

    return lambda theta: jax.lax.map(lambda i: one(theta, i), jnp.arange(n))


def floor_chunk(n, itemsize, budget_bytes=64 * 2**20, batch=1):
    """Coordinates per chunk so that the 2·chunk perturbed copies of θ (times `batch`) stay under budget_bytes."""
    return int(max(1, min(n, budget_bytes // (2 * n * itemsize * batch))))


def to_torch(tree_or_array):
    import torch

    return jax.tree_util.tree_map(lambda v: torch.from_numpy(np.array(v)), tree_or_array)


def torch_flat_loss(model):
    """θ (a flat torch tensor, in ravel_pytree's order) -> the torch twin's loss."""
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(model.params)
    names = [path[0].key for path, _ in leaves_with_path]  # flat dicts: ravel_pytree's order
    shapes = [np.shape(v) for _, v in leaves_with_path]
    sizes = [int(np.prod(s)) for s in shapes]
    targs = to_torch(model.args)

    def fn(theta):
        parts, o = {}, 0
        for name, shape, size in zip(names, shapes, sizes):
            parts[name] = theta[o : o + size].reshape(shape)
            o += size
        return model.torch_loss(parts, *targs)

    return fn


def verify(model, with_torch=True):
    """Compare the hand-written gradient with jax.grad and the torch twin (loss and autograd)."""
    import jgc

    out = {"n": num_params(model.params)}
    g_hand = model.grad(model.params, *model.args)
    g_auto = jax.grad(model.loss)(model.params, *model.args)
    out["hand_vs_jax_grad_rel"] = float(jgc.relative_error(g_hand, g_auto))
    if with_torch:
        import torch

        theta, _, _ = flat(model)
        t = torch.from_numpy(np.array(theta)).requires_grad_(True)
        value = torch_flat_loss(model)(t)
        value.backward()
        g = np.asarray(ravel_pytree(g_hand)[0])
        out["torch_loss_abs_diff"] = abs(float(value.detach()) - float(model.loss(model.params, *model.args)))
        out["hand_vs_torch_grad_rel"] = float(
            np.linalg.norm(t.grad.numpy() - g) / (np.linalg.norm(t.grad.numpy()) + np.linalg.norm(g))
        )
    return out
