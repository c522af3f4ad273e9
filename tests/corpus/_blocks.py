"""Model blocks with hand-written backward passes: a language model whose embedding is tied
to its output projection (repeated ids), residual blocks with LayerScale (nested params),
and an MLP with the exact (erf) GELU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from ._model import log_softmax, model, normal, softmax

# ---------------------------------------------------------------- tied embedding: the same matrix for lookup and output

VOCAB, DIM = 5, 3
IDS = (0, 3, 3, 1, 0, 3, 4)  # repeated ids; inputs IDS[:-1], targets IDS[1:]


def tied_init(key, dtype):
    k = jax.random.split(key, 3)
    params = {
        "E": normal(k[0], (VOCAB, DIM), dtype),
        "W": normal(k[1], (DIM, DIM), dtype, 0.7),
        "b": normal(k[2], (DIM,), dtype, 0.1),
    }
    return params, (jnp.array(IDS),)


def tied_loss(p, ids):
    h = jnp.tanh(p["E"][ids[:-1]] @ p["W"] + p["b"][None])
    logp = log_softmax(h @ p["E"].T)
    return -jnp.mean(jnp.take_along_axis(logp, ids[1:, None], axis=1))


def tied_grad(p, ids, bug=None):
    e = p["E"][ids[:-1]]
    h = jnp.tanh(e @ p["W"] + p["b"][None])
    m = h.shape[0]
    dlogits = (softmax(h @ p["E"].T) - jax.nn.one_hot(ids[1:], VOCAB, dtype=h.dtype)) / m
    dE_out = dlogits.T @ h
    dz = (dlogits @ p["E"]) * (1 - h**2)
    de = dz @ p["W"].T
    zeros = jnp.zeros_like(p["E"])
    dE_in = zeros.at[ids[:-1]].set(de) if bug == "lookup_set_not_add" else zeros.at[ids[:-1]].add(de)
    dE = {"output_use_only": dE_out, "lookup_use_only": dE_in}.get(bug, dE_in + dE_out)
    return {"E": dE, "W": e.T @ dz, "b": dz.sum(0)}


TIED_LM = model(
    "tied_embedding_lm",
    tied_init,
    tied_loss,
    tied_grad,
    {"output_use_only": ("['E']", "gross"), "lookup_use_only": ("['E']", "gross"), "lookup_set_not_add": ("['E']", "gross")},
)

# ---------------------------------------------------------------- two residual blocks y = x + α ⊙ f(x), params a list of dicts


def residual_init(key, dtype):
    k = jax.random.split(key, 8)
    blocks = [
        {
            "W1": normal(k[4 * i], (3, 4), dtype, 0.6),
            "b1": normal(k[4 * i + 1], (4,), dtype, 0.1),
            "W2": normal(k[4 * i + 2], (4, 3), dtype, 0.6),
            "alpha": 0.5 + normal(k[4 * i + 3], (3,), dtype, 0.1),
        }
        for i in range(2)
    ]
    x, c = jax.random.split(jax.random.fold_in(key, 1))
    return blocks, (normal(x, (4, 3), dtype), normal(c, (4, 3), dtype))


def _block(b, x):
    h = jnp.tanh(x @ b["W1"] + b["b1"][None])
    f = h @ b["W2"]
    return x + b["alpha"][None] * f, (h, f)


def residual_loss(blocks, x, c):
    for b in blocks:
        x, _ = _block(b, x)
    return jnp.sum(c * x)


def residual_grad(blocks, x, c, bug=None):
    xs, caches = [x], []
    for b in blocks:
        y, cache = _block(b, xs[-1])
        xs.append(y)
        caches.append(cache)
    grads = [None, None]
    dy = c
    for i in reversed(range(2)):
        b, (h, f) = blocks[i], caches[i]
        # bug: block 2's weight gradient uses the network input instead of its own input
        x_in = xs[0] if bug == "block_input_mixed_up" and i == 1 else xs[i]
        df = dy if bug == "alpha_not_in_backward" else dy * b["alpha"][None]
        dz = (df @ b["W2"].T) * (1 - h**2)
        grads[i] = {"W1": x_in.T @ dz, "b1": dz.sum(0), "W2": h.T @ df, "alpha": jnp.sum(dy * f, axis=0)}
        dx = dz @ b["W1"].T
        dy = dx if bug == "skip_path_dropped" else dy + dx
    return grads


RESIDUAL = model(
    "residual_layerscale",
    residual_init,
    residual_loss,
    residual_grad,
    {
        "skip_path_dropped": ("[0]['W2']", "gross"),
        "block_input_mixed_up": ("[1]['W1']", "gross"),
        "alpha_not_in_backward": ("[1]['W2']", "gross"),
    },
)

# ---------------------------------------------------------------- exact GELU (erf), whose backward is easy to approximate


def gelu_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {
        "W1": normal(k[0], (3, 4), dtype, 0.8),
        "b1": normal(k[1], (4,), dtype, 0.2),
        "W2": normal(k[2], (4, 2), dtype, 0.7),
    }
    return params, (normal(k[3], (6, 3), dtype), normal(k[4], (6, 2), dtype))


def _gelu(z):
    return 0.5 * z * (1 + jsp.erf(z / jnp.sqrt(2.0).astype(z.dtype)))


def _gelu_tanh_derivative(z):
    """Derivative of the tanh approximation 0.5 z (1 + tanh(√(2/π)(z + 0.044715 z³)))."""
    c = jnp.sqrt(2 / jnp.pi).astype(z.dtype)
    u = c * (z + 0.044715 * z**3)
    t = jnp.tanh(u)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t**2) * c * (1 + 3 * 0.044715 * z**2)


def gelu_loss(p, x, y):
    out = _gelu(x @ p["W1"] + p["b1"][None]) @ p["W2"]
    return 0.5 * jnp.sum((out - y) ** 2)


def gelu_grad(p, x, y, bug=None):
    z = x @ p["W1"] + p["b1"][None]
    a = _gelu(z)
    dout = a @ p["W2"] - y
    cdf = 0.5 * (1 + jsp.erf(z / jnp.sqrt(2.0).astype(z.dtype)))
    pdf = jnp.exp(-0.5 * z * z) / jnp.sqrt(2 * jnp.pi).astype(z.dtype)
    dgelu = {"tanh_approx_backward": _gelu_tanh_derivative(z), "cdf_only": cdf}.get(bug, cdf + z * pdf)
    dz = (dout @ p["W2"].T) * dgelu
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": a.T @ dout}


GELU_MLP = model(
    "gelu_mlp", gelu_init, gelu_loss, gelu_grad, {"tanh_approx_backward": ("['W1']", "subtle"), "cdf_only": ("['W1']", "gross")}
)

# ---------------------------------------------------------------- leaky ReLU (slope 0.01); random pre-activations (min |z| 4e-4 … 0.3 over seeds 0-9)

SLOPE = 0.01


def leaky_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {
        "W1": normal(k[0], (3, 5), dtype, 0.8),
        "b1": normal(k[1], (5,), dtype, 0.3),
        "W2": normal(k[2], (5, 2), dtype, 0.7),
    }
    return params, (normal(k[3], (6, 3), dtype), normal(k[4], (6, 2), dtype))


def _leaky(z):
    return jnp.where(jnp.real(z) > 0, z, SLOPE * z)


def leaky_loss(p, x, y):
    return 0.5 * jnp.sum((_leaky(x @ p["W1"] + p["b1"][None]) @ p["W2"] - y) ** 2)


def leaky_grad(p, x, y, bug=None):
    z = x @ p["W1"] + p["b1"][None]
    a = _leaky(z)
    dout = a @ p["W2"] - y
    pos = jnp.real(z) > 0
    if bug == "slope_on_positive_side":
        da = jnp.where(pos, SLOPE, 1.0)
    else:  # bug relu_derivative_backward: the negative side gets 0, as for a plain ReLU
        da = jnp.where(pos, 1.0, 0.0 if bug == "relu_derivative_backward" else SLOPE)
    dz = (dout @ p["W2"].T) * da
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": a.T @ dout}


LEAKY_MLP = model(
    "leaky_relu_mlp",
    leaky_init,
    leaky_loss,
    leaky_grad,
    {"relu_derivative_backward": ("['W1']", "moderate"), "slope_on_positive_side": ("['W1']", "gross")},
)

# ---------------------------------------------------------------- cross-entropy with label smoothing 0.01

SMOOTH, CLASSES = 0.01, 4


def smoothing_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (3, CLASSES), dtype, 0.7), "b": normal(k[1], (CLASSES,), dtype, 0.3)}
    return params, (normal(k[2], (8, 3), dtype), jax.random.randint(k[3], (8,), 0, CLASSES))


def _smoothed(labels, dtype, eps=SMOOTH):
    return (1 - eps) * jax.nn.one_hot(labels, CLASSES, dtype=dtype) + eps / CLASSES


def smoothing_loss(p, x, labels):
    logp = log_softmax(x @ p["W"] + p["b"][None])
    return -jnp.mean(jnp.sum(_smoothed(labels, x.dtype) * logp, axis=1))


def smoothing_grad(p, x, labels, bug=None):
    m = x.shape[0]
    eps = {"smoothing_forgotten": 0.0, "smoothing_doubled": 2 * SMOOTH}.get(bug, SMOOTH)
    probs = softmax(x @ p["W"] + p["b"][None])
    d = (probs - _smoothed(labels, x.dtype, eps)) / m
    return {"W": x.T @ d, "b": probs.sum(0) / m if bug == "targets_not_subtracted" else d.sum(0)}


LABEL_SMOOTHING = model(
    "label_smoothing_ce",
    smoothing_init,
    smoothing_loss,
    smoothing_grad,
    {
        "smoothing_forgotten": ("['W']", "moderate"),
        "smoothing_doubled": ("['W']", "moderate"),
        "targets_not_subtracted": ("['b']", "gross"),
    },
)

BLOCKS = [TIED_LM, RESIDUAL, GELU_MLP, LEAKY_MLP, LABEL_SMOOTHING]
NOT_COMPLEX_SAFE = {GELU_MLP.name}  # erf has no complex implementation in JAX
