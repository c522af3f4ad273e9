"""Dense models: MLP with L2, dropout, softmax cross-entropy, ReLU at its kink, Huber, embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import log_softmax, model, normal, relu, softmax

# ---------------------------------------------------------------- MLP with L2

LAM = 0.1


def mlp_init(key, dtype):
    k = jax.random.split(key, 6)
    params = {
        "W1": normal(k[0], (4, 4), dtype, 0.7),
        "b1": normal(k[1], (4,), dtype, 0.1),
        "W2": normal(k[2], (4, 2), dtype, 0.7),
        "b2": normal(k[3], (2,), dtype, 0.1),
    }
    return params, (normal(k[4], (5, 4), dtype), normal(k[5], (5, 2), dtype))


def mlp_loss(p, x, y):
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    out = h @ p["W2"] + p["b2"][None]
    l2 = jnp.sum(p["W1"] ** 2) + jnp.sum(p["W2"] ** 2)
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1)) + 0.5 * LAM * l2


def mlp_grad(p, x, y, bug=None):
    m = x.shape[0]
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    dout = (h @ p["W2"] + p["b2"][None] - y) / m
    dW2 = h.T @ dout + (2 if bug == "l2_twice" else 1) * LAM * p["W2"]
    db2 = dout.sum(0)
    dz = (dout @ p["W2"].T) * (1 - h**2)
    dW1 = x.T @ dz + (0 if bug == "forgot_l2" else LAM) * p["W1"]
    db1 = dz.mean(0) if bug == "bias_mean" else dz.sum(0)
    if bug == "transposed":
        dW1 = dW1.T
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


MLP_L2 = model(
    "mlp_l2",
    mlp_init,
    mlp_loss,
    mlp_grad,
    {
        "forgot_l2": ("['W1']", "gross"),
        "l2_twice": ("['W2']", "gross"),
        "bias_mean": ("['b1']", "gross"),
        "transposed": ("['W1']", "gross"),
    },
)

# ---------------------------------------------------------------- inverted dropout, key in args

KEEP = 0.75


def dropout_init(key, dtype):
    k = jax.random.split(key, 6)
    params = {
        "W1": normal(k[0], (3, 6), dtype, 0.7),
        "b1": normal(k[1], (6,), dtype, 0.1),
        "W2": normal(k[2], (6, 2), dtype, 0.5),
    }
    return params, (normal(k[3], (4, 3), dtype), normal(k[4], (4, 2), dtype), k[5])


def _mask(key, shape, dtype):
    return jax.random.bernoulli(key, KEEP, shape).astype(dtype)


def dropout_loss(p, x, y, key):
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    hd = h * _mask(key, h.shape, x.dtype) / KEEP
    return 0.5 * jnp.mean(jnp.sum((hd @ p["W2"] - y) ** 2, axis=1))


def dropout_grad(p, x, y, key, bug=None):
    m = x.shape[0]
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    mask = _mask(jax.random.fold_in(key, 1) if bug == "new_mask" else key, h.shape, x.dtype)
    hd = h * _mask(key, h.shape, x.dtype) / KEEP
    dout = (hd @ p["W2"] - y) / m
    dhd = dout @ p["W2"].T
    if bug == "forgot_mask":
        dh = dhd / KEEP
    elif bug == "forgot_scale":
        dh = dhd * mask
    else:
        dh = dhd * mask / KEEP
    dz = dh * (1 - h**2)
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": hd.T @ dout}


DROPOUT = model(
    "dropout_mlp",
    dropout_init,
    dropout_loss,
    dropout_grad,
    {"forgot_mask": ("['W1']", "gross"), "forgot_scale": ("['W1']", "gross"), "new_mask": ("['W1']", "gross")},
)

# ---------------------------------------------------------------- softmax cross-entropy


def softmax_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (4, 3), dtype, 0.7), "b": normal(k[1], (3,), dtype, 0.3)}
    return params, (normal(k[2], (6, 4), dtype), jax.random.randint(k[3], (6,), 0, 3))


def softmax_loss(p, x, labels):
    logp = log_softmax(x @ p["W"] + p["b"][None])
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def softmax_grad(p, x, labels, bug=None):
    m = x.shape[0]
    probs = softmax(x @ p["W"] + p["b"][None])
    onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=x.dtype)
    dlogits = (probs - onehot) / m
    dW = x.T @ (probs / m if bug == "forgot_onehot" else dlogits)
    if bug == "sum_not_mean":
        dW = dW * m
    db = dlogits.sum(0)
    return {"W": dW, "b": -db if bug == "sign" else db}


SOFTMAX_CE = model(
    "softmax_ce",
    softmax_init,
    softmax_loss,
    softmax_grad,
    {"forgot_onehot": ("['W']", "gross"), "sum_not_mean": ("['W']", "gross"), "sign": ("['b']", "gross")},
)

# ---------------------------------------------------------------- ReLU MLP with pre-activations at the kink


def relu_init(key, dtype):
    k = jax.random.split(key, 5)
    x = normal(k[0], (5, 3), dtype)
    W1 = normal(k[1], (3, 4), dtype, 0.8)
    # units 0 and 1 sit exactly at the kink for sample 0: z[0, :2] = 0
    b1 = normal(k[2], (4,), dtype, 0.3).at[:2].set(-(x @ W1)[0, :2])
    params = {"W1": W1, "b1": b1, "W2": normal(k[3], (4, 1), dtype, 0.8)}
    return params, (x, normal(k[4], (5, 1), dtype))


def relu_loss(p, x, y):
    out = relu(x @ p["W1"] + p["b1"][None]) @ p["W2"]
    return 0.5 * jnp.mean((out - y) ** 2)


def relu_grad(p, x, y, bug=None):
    m = x.shape[0]
    z = x @ p["W1"] + p["b1"][None]
    h = relu(z)
    dout = (h @ p["W2"] - y) / m
    dh = dout @ p["W2"].T
    if bug == "relu_grad_one":
        dz = dh
    elif bug == "mask_inverted":
        dz = dh * (z < 0)
    else:
        dz = dh * (z > 0)
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ dout}


RELU_MLP = model(
    "relu_mlp_at_kink",
    relu_init,
    relu_loss,
    relu_grad,
    {"relu_grad_one": ("['W1']", "gross"), "mask_inverted": ("['W1']", "gross")},
)

# ---------------------------------------------------------------- Huber regression

DELTA = 1.0


def huber_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"w": normal(k[0], (4,), dtype), "b": normal(k[1], (), dtype, 0.3)}
    return params, (normal(k[2], (8, 4), dtype), normal(k[3], (8,), dtype, 3.0))


def huber_loss(p, x, y):
    r = x @ p["w"] + p["b"] - y
    s = jnp.sign(jnp.real(r))
    return jnp.mean(jnp.where(jnp.abs(jnp.real(r)) <= DELTA, 0.5 * r**2, DELTA * (s * r - 0.5 * DELTA)))


def huber_grad(p, x, y, bug=None):
    r = x @ p["w"] + p["b"] - y
    dr = (r if bug == "no_clip" else jnp.clip(r, -DELTA, DELTA)) / r.shape[0]
    db = dr.sum()
    return {"w": x.T @ dr, "b": -db if bug == "sign" else db}


HUBER = model("huber_regression", huber_init, huber_loss, huber_grad, {"no_clip": ("['w']", "gross"), "sign": ("['b']", "gross")})

# ---------------------------------------------------------------- embedding lookup (repeated ids)


def embedding_init(key, dtype):
    k = jax.random.split(key, 3)
    params = {"E": normal(k[0], (6, 3), dtype), "W": normal(k[1], (3, 2), dtype, 0.7)}
    ids = jnp.array([0, 2, 2, 5, 0, 3])
    return params, (ids, normal(k[2], (6, 2), dtype))


def embedding_loss(p, ids, t):
    return jnp.sum(jnp.tanh(p["E"][ids] @ p["W"]) * t)


def embedding_grad(p, ids, t, bug=None):
    e = p["E"][ids]
    y = jnp.tanh(e @ p["W"])
    dy = t * (1 - y**2)
    de = dy @ p["W"].T
    dE = jnp.zeros_like(p["E"])
    dE = dE.at[ids].set(de) if bug == "set_not_add" else dE.at[ids].add(de)
    dW = jnp.zeros_like(p["W"]) if bug == "zero_W" else e.T @ dy
    return {"E": dE, "W": dW}


EMBEDDING = model(
    "embedding", embedding_init, embedding_loss, embedding_grad, {"set_not_add": ("['E']", "gross"), "zero_W": ("['W']", "gross")}
)

DENSE = [MLP_L2, DROPOUT, SOFTMAX_CE, RELU_MLP, HUBER, EMBEDDING]
