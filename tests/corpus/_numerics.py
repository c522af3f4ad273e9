"""Conditioning: where finite differences, not the bug, decide what a checker can see.

Small leaves next to large ones, L2 terms at small λ, losses with a large constant part,
inputs of size 1e2, a loss that computes in float32 inside float64 parameters, a
softmax with a temperature, a binary cross-entropy with an epsilon inside its logs, and
an Euler integrator whose last step is tiny.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import log_softmax, model, normal, softmax

# ---------------------------------------------------------------- a bias whose gradient is tiny next to large weight gradients


def _small_bias_init(m):
    def init(key, dtype):
        """Centred inputs of size 10 and a bias 1e-2 from its optimum: the bias gradient is m·δb,
        hundreds of times smaller than the weight gradients."""
        k = jax.random.split(key, 6)
        x = normal(k[0], (m, 4), dtype, 10.0)
        x = x - x.mean(0, keepdims=True)
        W_true, b_true = normal(k[1], (4, 2), dtype, 0.5), normal(k[2], (2,), dtype, 0.5)
        noise = normal(k[3], (m, 2), dtype, 0.1)
        y = x @ W_true + b_true[None] + (noise - noise.mean(0, keepdims=True))
        params = {"W": W_true + normal(k[4], (4, 2), dtype, 0.05), "b": b_true + normal(k[5], (2,), dtype, 1e-2)}
        return params, (x, y)

    return init


def small_bias_sum_loss(p, x, y):
    return 0.5 * jnp.sum((x @ p["W"] + p["b"][None] - y) ** 2)


def small_bias_sum_grad(p, x, y, bug=None):
    r = x @ p["W"] + p["b"][None] - y
    return {"W": x.T @ r, "b": r.mean(0) if bug == "bias_mean_not_sum" else r.sum(0)}


SMALL_BIAS_SUM = model(
    "small_bias_sum",
    _small_bias_init(3),
    small_bias_sum_loss,
    small_bias_sum_grad,
    {"bias_mean_not_sum": ("['b']", "gross")},
)


def small_bias_mean_loss(p, x, y):
    return 0.5 * jnp.mean(jnp.sum((x @ p["W"] + p["b"][None] - y) ** 2, axis=1))


def small_bias_mean_grad(p, x, y, bug=None):
    m = x.shape[0]
    r = x @ p["W"] + p["b"][None] - y
    # bug: the bias gradient normalised by m - 1 (an "unbiased" mean): relative error 1/(2m - 1)
    return {"W": x.T @ r / m, "b": r.sum(0) / (m - 1 if bug == "bias_over_m_minus_1" else m)}


SMALL_BIAS_MEAN = model(
    "small_bias_mean",
    _small_bias_init(60),
    small_bias_mean_loss,
    small_bias_mean_grad,
    {"bias_over_m_minus_1": ("['b']", "moderate")},
)

# ---------------------------------------------------------------- L2 at small λ: forgotten, doubled, applied to the biases


def _l2_init(key, dtype):
    k = jax.random.split(key, 6)
    params = {
        "W1": normal(k[0], (4, 4), dtype, 0.7),
        "b1": normal(k[1], (4,), dtype, 0.5),
        "W2": normal(k[2], (4, 2), dtype, 0.7),
        "b2": normal(k[3], (2,), dtype, 0.5),
    }
    return params, (normal(k[4], (8, 4), dtype), normal(k[5], (8, 2), dtype))


def _l2_model(lam, name, tags):
    def loss(p, x, y):
        h = jnp.tanh(x @ p["W1"] + p["b1"][None])
        out = h @ p["W2"] + p["b2"][None]
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1)) + 0.5 * lam * (jnp.sum(p["W1"] ** 2) + jnp.sum(p["W2"] ** 2))

    def grad(p, x, y, bug=None):
        m = x.shape[0]
        h = jnp.tanh(x @ p["W1"] + p["b1"][None])
        dout = (h @ p["W2"] + p["b2"][None] - y) / m
        dz = (dout @ p["W2"].T) * (1 - h**2)
        dW1 = x.T @ dz + (0 if bug == "forgot_l2" else lam) * p["W1"]
        dW2 = h.T @ dout + (2 * lam if bug == "l2_doubled" else lam) * p["W2"]
        db1 = dz.sum(0) + (lam * p["b1"] if bug == "l2_on_bias" else 0)
        return {"W1": dW1, "b1": db1, "W2": dW2, "b2": dout.sum(0)}

    grad.__doc__ = f"Tanh MLP with L2 (λ = {lam:g}) on the weights only."
    leaves = {"forgot_l2": "['W1']", "l2_doubled": "['W2']", "l2_on_bias": "['b1']"}
    return model(name, _l2_init, loss, grad, {b: (leaf, t) for (b, leaf), t in zip(leaves.items(), tags)})


# the relative error of the leaf is ~ λ‖W‖/‖g‖: tags (forgot, doubled, on bias) measured at seed 0
L2_SMALL = [
    _l2_model(1e-2, "mlp_l2_lam1e-2", ("gross", "moderate", "gross")),
    _l2_model(1e-3, "mlp_l2_lam1e-3", ("moderate", "subtle", "moderate")),
    _l2_model(1e-4, "mlp_l2_lam1e-4", ("subtle", "subtle", "subtle")),
]

# ---------------------------------------------------------------- a large constant part: |J| ~ 1e4

OFFSET = 1e4


def offset_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {"W1": normal(k[0], (3, 3), dtype, 0.7), "b1": normal(k[1], (3,), dtype, 0.3), "w2": normal(k[2], (3,), dtype, 0.7)}
    return params, (normal(k[3], (6, 3), dtype), normal(k[4], (6,), dtype))


def offset_loss(p, x, y):
    """Squared error plus a constant 1e4 (a log-normaliser or baseline kept in the reported loss)."""
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    return 0.5 * jnp.sum((h @ p["w2"] - y) ** 2) + OFFSET


def offset_grad(p, x, y, bug=None):
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    r = h @ p["w2"] - y
    dz = r[:, None] * p["w2"][None] * (1 - h**2)
    dW1 = x.T @ dz * {"W1_10pct": 1.1, "W1_1pct": 1.01}.get(bug, 1.0)
    return {"W1": dW1, "b1": dz.sum(0), "w2": h.T @ r}


LARGE_OFFSET = model(
    "large_offset", offset_init, offset_loss, offset_grad, {"W1_10pct": ("['W1']", "gross"), "W1_1pct": ("['W1']", "moderate")}
)


def poisson_init(key, dtype):
    """Counts around 100, parameters near the truth: the data terms sum to |J| ~ 7e3."""
    k = jax.random.split(key, 5)
    x = normal(k[0], (20, 3), dtype, 0.3)
    w_true = normal(k[1], (3,), dtype, 0.5)
    y = jax.random.poisson(k[2], 100.0 * jnp.exp(x @ w_true)).astype(dtype)
    params = {"w": w_true + normal(k[3], (3,), dtype, 0.05), "b": jnp.log(100.0).astype(dtype) + normal(k[4], (), dtype, 0.05)}
    return params, (x, y)


def poisson_loss(p, x, y):
    """Poisson negative log-likelihood without the log(y!) constant."""
    eta = x @ p["w"] + p["b"]
    return jnp.sum(jnp.exp(eta) - y * eta)


def poisson_grad(p, x, y, bug=None):
    r = jnp.exp(x @ p["w"] + p["b"]) - y
    return {"w": x.T @ r * (1.1 if bug == "w_10pct" else 1.0), "b": r.sum() * (1.01 if bug == "b_1pct" else 1.0)}


POISSON = model(
    "poisson_nll", poisson_init, poisson_loss, poisson_grad, {"w_10pct": ("['w']", "gross"), "b_1pct": ("['b']", "moderate")}
)

# ---------------------------------------------------------------- inputs of size 1e2


def large_input_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {"W": normal(k[0], (3, 2), dtype, 5e-3), "b": normal(k[1], (2,), dtype, 0.3), "v": normal(k[2], (2,), dtype)}
    return params, (normal(k[3], (5, 3), dtype, 100.0), normal(k[4], (5,), dtype))


def large_input_loss(p, x, y):
    """Inputs ~1e2, weights ~5e-3: a step of eps in W moves the pre-activation by 1e2·eps."""
    h = jnp.tanh(x @ p["W"] + p["b"][None])
    return 0.5 * jnp.sum((h @ p["v"] - y) ** 2)


def large_input_grad(p, x, y, bug=None):
    h = jnp.tanh(x @ p["W"] + p["b"][None])
    r = h @ p["v"] - y
    # bug: the backward recomputes the activation without the bias
    h_back = jnp.tanh(x @ p["W"]) if bug == "bias_left_out_of_recompute" else h
    dh = r[:, None] * p["v"][None]
    dz = dh if bug == "forgot_tanh_derivative" else dh * (1 - h_back**2)
    return {"W": x.T @ dz, "b": dz.sum(0), "v": h.T @ r}


LARGE_INPUT = model(
    "large_input",
    large_input_init,
    large_input_loss,
    large_input_grad,
    {"forgot_tanh_derivative": ("['W']", "gross"), "bias_left_out_of_recompute": ("['W']", "gross")},
)

# ---------------------------------------------------------------- float32 inside a float64 loss (float64 params only)

F32_LAM = 1e-2


def f32_mlp_init(key, dtype):
    k = jax.random.split(key, 6)
    params = {
        "W1": normal(k[0], (4, 4), dtype, 0.7),
        "b1": normal(k[1], (4,), dtype, 0.3),
        "W2": normal(k[2], (4, 2), dtype, 0.7),
        "b2": normal(k[3], (2,), dtype, 0.3),
    }
    return params, (normal(k[4], (6, 4), dtype), normal(k[5], (6, 2), dtype))


def f32_mlp_loss(p, x, y):
    """A tanh MLP with L2 evaluated in float32 (mixed precision), returned as float64."""
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p)
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    h = jnp.tanh(x32 @ p32["W1"] + p32["b1"][None])
    out = h @ p32["W2"] + p32["b2"][None]
    l2 = jnp.sum(p32["W1"] ** 2) + jnp.sum(p32["W2"] ** 2)
    return (0.5 * jnp.mean(jnp.sum((out - y32) ** 2, axis=1)) + 0.5 * F32_LAM * l2).astype(x.dtype)


def f32_mlp_grad(p, x, y, bug=None):
    """The gradient in float64 (of the float64 version of the loss)."""
    m = x.shape[0]
    h = jnp.tanh(x @ p["W1"] + p["b1"][None])
    dout = (h @ p["W2"] + p["b2"][None] - y) / m
    dz = (dout @ p["W2"].T) * (1 - h**2)
    dW1 = x.T @ dz + (0 if bug == "forgot_l2" else F32_LAM) * p["W1"]
    dW1 = dW1.T if bug == "transposed" else dW1
    db2 = dout.sum(0)
    return {"W1": dW1, "b1": dz.sum(0), "W2": h.T @ dout + F32_LAM * p["W2"], "b2": -db2 if bug == "sign" else db2}


F32_MLP = model(
    "f32_inside_mlp",
    f32_mlp_init,
    f32_mlp_loss,
    f32_mlp_grad,
    {"forgot_l2": ("['W1']", "gross"), "transposed": ("['W1']", "gross"), "sign": ("['b2']", "gross")},
)


def f32_softmax_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (4, 3), dtype, 0.7), "b": normal(k[1], (3,), dtype, 0.3)}
    return params, (normal(k[2], (8, 4), dtype), jax.random.randint(k[3], (8,), 0, 3))


def f32_softmax_loss(p, x, labels):
    """Softmax cross-entropy evaluated in float32, returned in the parameters' dtype."""
    z = x.astype(jnp.float32) @ p["W"].astype(jnp.float32) + p["b"].astype(jnp.float32)[None]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), labels[:, None], axis=1)).astype(x.dtype)


def f32_softmax_grad(p, x, labels, bug=None):
    m = x.shape[0]
    d = (jax.nn.softmax(x @ p["W"] + p["b"][None]) - jax.nn.one_hot(labels, 3, dtype=x.dtype)) / m
    dW = x.T @ d * (m if bug == "sum_not_mean" else 1)
    return {"W": dW, "b": d.sum(0) * (1.01 if bug == "b_1pct" else 1.0)}


F32_SOFTMAX = model(
    "f32_inside_softmax",
    f32_softmax_init,
    f32_softmax_loss,
    f32_softmax_grad,
    {"sum_not_mean": ("['W']", "gross"), "b_1pct": ("['b']", "moderate")},
)

# ---------------------------------------------------------------- softmax regression with a temperature

TEMP = 2.0


def temperature_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (4, 3), dtype, 0.7), "b": normal(k[1], (3,), dtype, 0.3)}
    return params, (normal(k[2], (6, 4), dtype), jax.random.randint(k[3], (6,), 0, 3))


def temperature_loss(p, x, labels):
    logp = log_softmax((x @ p["W"] + p["b"][None]) / TEMP)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def temperature_grad(p, x, labels, bug=None):
    m = x.shape[0]
    t = {"temperature_off_1e-4": TEMP * (1 + 1e-4), "forgot_temperature": 1.0}.get(bug, TEMP)
    d = (softmax((x @ p["W"] + p["b"][None]) / TEMP) - jax.nn.one_hot(labels, 3, dtype=x.dtype)) / (m * t)
    dW = x.T @ d
    if bug == "clip_bites_one_entry":  # elementwise clipping at a threshold only the largest entry reaches
        c = 0.998 * jax.lax.stop_gradient(jnp.max(jnp.abs(dW)))
        dW = jnp.clip(dW, -c, c)
    return {"W": dW, "b": d.sum(0)}


TEMPERATURE = model(
    "softmax_temperature",
    temperature_init,
    temperature_loss,
    temperature_grad,
    {
        "temperature_off_1e-4": ("['W']", "subtle"),
        "forgot_temperature": ("['W']", "gross"),
        "clip_bites_one_entry": ("['W']", "subtle"),
    },
)

# ---------------------------------------------------------------- binary cross-entropy with an epsilon inside the logs

BCE_EPS = 1e-7


def bce_init(key, dtype):
    """Logits of size ~5, so some predictions are confident (p ~ 1e-2 or 1 - 1e-2)."""
    k = jax.random.split(key, 4)
    params = {"w": normal(k[0], (4,), dtype, 2.5), "b": normal(k[1], (), dtype, 0.3)}
    return params, (normal(k[2], (10, 4), dtype), jax.random.bernoulli(k[3], 0.5, (10,)).astype(dtype))


def bce_loss(p, x, y):
    q = 1 / (1 + jnp.exp(-(x @ p["w"] + p["b"])))
    return -jnp.mean(y * jnp.log(q + BCE_EPS) + (1 - y) * jnp.log(1 - q + BCE_EPS))


def bce_grad(p, x, y, bug=None):
    m = x.shape[0]
    q = 1 / (1 + jnp.exp(-(x @ p["w"] + p["b"])))
    if bug == "log_eps_omitted":  # the textbook q - y, which ignores the epsilon in the logs
        dz = (q - y) / m
    else:
        dz = (-y / (q + BCE_EPS) + (1 - y) / (1 - q + BCE_EPS)) * q * (1 - q) / m
    if bug == "double_sigmoid_derivative":
        dz = dz * q * (1 - q)
    db = dz.sum()
    return {"w": x.T @ dz, "b": -db if bug == "sign" else db}


BCE = model(
    "bce_log_eps",
    bce_init,
    bce_loss,
    bce_grad,
    {"log_eps_omitted": ("['w']", "subtle"), "double_sigmoid_derivative": ("['w']", "gross"), "sign": ("['b']", "gross")},
)

# ---------------------------------------------------------------- explicit Euler through time, a tiny last step

DT, T_END = 0.25, 1.001  # four steps of 0.25, then one of 1e-3


def _euler_steps():
    n = int(T_END / DT)
    return [DT] * n + [T_END - n * DT]


def euler_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {
        "W": normal(k[0], (3, 3), dtype, 0.6),
        "b": normal(k[1], (3,), dtype, 0.2),
        "a": 0.5 + 0.2 * normal(k[2], (3,), dtype),
    }
    return params, (normal(k[3], (2, 3), dtype), normal(k[4], (2, 3), dtype))


def _euler_f(p, x):
    y = jnp.tanh(x @ p["W"] + p["b"][None])
    return y - p["a"][None] * x, y


def euler_loss(p, x0, c):
    """dx/dt = tanh(x W + b) - a·x by explicit Euler from 0 to T_END; loss Σ c·x(T_END)."""
    x = x0
    for h in _euler_steps():
        x = x + h * _euler_f(p, x)[0]
    return jnp.sum(c * x)


def euler_grad(p, x0, c, bug=None):
    steps = _euler_steps()
    xs = [x0]
    for h in steps:
        xs.append(xs[-1] + h * _euler_f(p, xs[-1])[0])
    g = {k: jnp.zeros_like(v) for k, v in p.items()}
    lam = c
    back = list(enumerate(steps))[::-1]
    if bug == "last_step_skipped":  # the backward loop runs over the full steps only
        back = back[1:]
    for k, h in back:
        if bug == "last_step_full_dt" and k == len(steps) - 1:
            h = DT
        _, y = _euler_f(p, xs[k])
        dz = h * lam * (1 - y**2)
        g["W"] = g["W"] + xs[k].T @ dz
        g["b"] = g["b"] + dz.sum(0)
        g["a"] = g["a"] + (1 if bug == "decay_sign" else -1) * h * jnp.sum(lam * xs[k], axis=0)
        lam = lam + dz @ p["W"].T - h * p["a"][None] * lam
    return g


EULER = model(
    "euler_ode",
    euler_init,
    euler_loss,
    euler_grad,
    {"last_step_skipped": ("['W']", "subtle"), "last_step_full_dt": ("['W']", "gross"), "decay_sign": ("['a']", "gross")},
)

NUMERICS = [
    SMALL_BIAS_SUM,
    SMALL_BIAS_MEAN,
    *L2_SMALL,
    LARGE_OFFSET,
    POISSON,
    LARGE_INPUT,
    F32_MLP,
    F32_SOFTMAX,
    TEMPERATURE,
    BCE,
    EULER,
]
# Losses that compute in float32 inside: checked with float64 params only, never complex-step.
FLOAT64_ONLY = {F32_MLP.name, F32_SOFTMAX.name}
NOT_COMPLEX_SAFE = set(FLOAT64_ONLY)
