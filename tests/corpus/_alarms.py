"""False-alarm classes (issue 18): correct gradients that a checker is tempted to accuse.

Each model has a hand-written, correct backward pass (equal to `jax.grad` in float64 to
~1e-12, except `mixed_precision`, whose hand-written gradient is that of the same loss
without its casts) and one or two planted bugs. What makes each one hard for a checker:

- `relu_mlp4`, `leaky_relu_mlp4`, `dropout_relu_mlp`: 4-layer (leaky) ReLU MLPs, He init,
  16 samples; float32's step (3e-3) crosses ReLU kinks.
- `residual_relu_zero`: a residual ReLU block with zero biases and samples that are exactly
  0, so some pre-activations are exactly 0 (genuine kinks along the bias).
- `maxpool_overlap`: a 2×2 max-pool with stride 1 (overlapping windows: an entry can be the
  maximum of several windows), `batchnorm_spatial` (N, C, H, W statistics over N, H, W),
  `groupnorm`: summation-order rounding that two compiled programs need not share.
- `large_arg_sin`: Σ sin(W x) with |W x| ~ 100s: rounding of J is u·Σ|terms|, not u·|J|.
- `classic_net`: the classic course's gradient-checking network at `np.random.seed(1)`
  (a fixed point, the key is ignored), relu-relu-sigmoid, cross-entropy / m, with the
  course's two planted bugs; `classic_net_random` is the same net at random params.
- `mixed_precision`: a float32 (or float64) loss that computes partly in bfloat16 and
  partly in float16; its gradient is correct for the loss without the casts.
- `f32_rounded_grad`: a correct gradient rounded through float32
  (`grad.astype(float32).astype(float64)`): relative error ~1e-8, within float64's tol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._model import model, normal

# ---------------------------------------------------------------- 4-layer ReLU MLPs (6-10-10-6-1, He init, 16 samples, MSE)

SIZES = (6, 10, 10, 6, 1)
M = 16
SLOPE = 0.01
KEEP = 0.8


def _he_init(key, dtype, extra=()):
    """He-initialised weights W1…W4 ((in, out), normal·sqrt(2/in)), zero biases, 16 samples; `extra`
    more keys appended to the args (a dropout key)."""
    k = jax.random.split(key, len(SIZES) + 1 + len(extra))
    params = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        params[f"W{i}"] = normal(k[i - 1], (a, b), dtype, float(np.sqrt(2.0 / a)))
        params[f"b{i}"] = jnp.zeros((b,), dtype)
    x = normal(k[len(SIZES) - 1], (M, SIZES[0]), dtype)
    y = normal(k[len(SIZES)], (M, SIZES[-1]), dtype)
    return params, (x, y) + tuple(k[len(SIZES) + 1 + j] for j in range(len(extra)))


def _act(z, slope):
    return jnp.where(jnp.real(z) > 0, z, slope * z)


def _act_grad(z, slope):
    return jnp.where(jnp.real(z) > 0, 1.0, slope).astype(z.dtype)


def _masks(key, dtype):
    """Inverted-dropout masks (keep KEEP, scaled by 1/KEEP) for the 3 hidden layers, drawn with
    `jax.random.bernoulli` (whose draw depends on the default float type: another mask under x64)."""
    ks = jax.random.split(key, len(SIZES) - 2)
    return [jax.random.bernoulli(k, KEEP, (M, n)).astype(dtype) / KEEP for k, n in zip(ks, SIZES[1:-1])]


def _mlp_forward(p, x, slope, masks=None):
    L = len(SIZES) - 1
    acts, zs = [x], []
    h = x
    for i in range(1, L + 1):
        z = h @ p[f"W{i}"] + p[f"b{i}"][None]
        zs.append(z)
        if i < L:
            h = _act(z, slope)
            if masks is not None:
                h = h * masks[i - 1]
            acts.append(h)
        else:
            h = z
    return h, acts, zs


def _mlp_loss(slope, dropout):
    def loss(p, x, y, *key):
        masks = _masks(key[0], x.dtype) if dropout else None
        out, _, _ = _mlp_forward(p, x, slope, masks)
        return 0.5 * jnp.mean((out - y) ** 2)

    return loss


def _mlp_grad(slope, dropout):
    def grad(p, x, y, *key, bug=None):
        L = len(SIZES) - 1
        masks = _masks(key[0], x.dtype) if dropout else None
        out, acts, zs = _mlp_forward(p, x, slope, masks)
        delta = (out - y) / out.size
        g = {}
        for i in range(L, 0, -1):
            g[f"W{i}"] = acts[i - 1].T @ delta
            g[f"b{i}"] = delta.mean(0) if (bug == "bias_mean" and i == L) else delta.sum(0)
            if i > 1:
                dh = delta @ p[f"W{i}"].T
                if masks is not None and not (bug == "forgot_mask" and i == 2):
                    dh = dh * masks[i - 2]
                z = zs[i - 2]
                if bug == "relu_grad_one" and i == 2:
                    d = jnp.ones_like(z)
                elif bug == "relu_derivative_backward":  # the leaky slope forgotten: a plain ReLU's mask
                    d = _act_grad(z, 0.0)
                elif bug == "mask_inverted" and i == 2:
                    d = jnp.where(jnp.real(z) > 0, slope, 1.0).astype(z.dtype)
                else:
                    d = _act_grad(z, slope)
                delta = dh * d
        return g

    return grad


def _mlp_model(name, slope, dropout, bugs):
    loss = _mlp_loss(slope, dropout)
    init = (lambda k, dt: _he_init(k, dt, extra=(0,))) if dropout else _he_init
    return model(name, init, loss, _mlp_grad(slope, dropout), bugs)


RELU_MLP4 = _mlp_model("relu_mlp4", 0.0, False, {"relu_grad_one": ("['W1']", "gross"), "bias_mean": ("['b4']", "gross")})
LEAKY_RELU_MLP4 = _mlp_model(
    "leaky_relu_mlp4",
    SLOPE,
    False,
    {"relu_derivative_backward": ("['W1']", "moderate"), "mask_inverted": ("['W1']", "gross")},
)
DROPOUT_RELU_MLP = _mlp_model(
    "dropout_relu_mlp", 0.0, True, {"forgot_mask": ("['W1']", "gross"), "relu_grad_one": ("['W1']", "gross")}
)

# ---------------------------------------------------------------- residual ReLU block with exact-zero pre-activations

D = 5


def residual_init(key, dtype):
    k = jax.random.split(key, 5)
    x = normal(k[0], (8, 3), dtype)
    x = x.at[::3].set(0.0)  # samples 0, 3, 6 are exactly 0: their pre-activations are exactly b1 = 0
    params = {
        "W0": normal(k[1], (3, D), dtype, 0.8),
        "W1": normal(k[2], (D, D), dtype, float(np.sqrt(2.0 / D))),
        "b1": jnp.zeros((D,), dtype),
        "W2": normal(k[3], (D, D), dtype, 0.5),
        "w": normal(k[4], (D,), dtype, 0.7),
    }
    y = jnp.sin(jnp.arange(8, dtype=dtype))
    return params, (x, y)


def _residual_forward(p, x):
    h0 = x @ p["W0"]
    z = h0 @ p["W1"] + p["b1"][None]
    a = _act(z, 0.0)
    h = h0 + a @ p["W2"]
    return h, h0, z, a


def residual_loss(p, x, y):
    h, _, _, _ = _residual_forward(p, x)
    return 0.5 * jnp.mean((h @ p["w"] - y) ** 2)


def residual_grad(p, x, y, bug=None):
    h, h0, z, a = _residual_forward(p, x)
    dout = (h @ p["w"] - y) / y.shape[0]
    dh = dout[:, None] * p["w"][None]
    da = dh @ p["W2"].T
    dz = da if bug == "relu_grad_one" else da * _act_grad(z, 0.0)
    dh0 = dz @ p["W1"].T + (0 if bug == "forgot_skip" else dh)
    return {"W0": x.T @ dh0, "W1": h0.T @ dz, "W2": a.T @ dh, "b1": dz.sum(0), "w": h.T @ dout}


RESIDUAL_RELU_ZERO = model(
    "residual_relu_zero",
    residual_init,
    residual_loss,
    residual_grad,
    {"forgot_skip": ("['W0']", "gross"), "relu_grad_one": ("['W1']", "gross")},
)

# ---------------------------------------------------------------- 2×2 max-pool, stride 1 (overlapping windows)

N_IMG, C_IN, C_OUT, SIDE = 3, 2, 3, 5
OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))


def maxpool_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {
        "W": normal(k[0], (C_OUT, C_IN), dtype, 0.8),
        "b": normal(k[1], (C_OUT,), dtype, 0.1),
        "V": normal(k[2], (C_OUT, SIDE - 1, SIDE - 1), dtype, 0.3),
    }
    return params, (normal(k[3], (N_IMG, C_IN, SIDE, SIDE), dtype), normal(k[4], (N_IMG,), dtype))


def _windows(z):
    """The 4 entries of every 2×2 window (stride 1): shape (4, N, C, S-1, S-1)."""
    s = z.shape[-1] - 1
    return jnp.stack([z[..., a : a + s, b : b + s] for a, b in OFFSETS])


def _pool_forward(p, x):
    z = jnp.einsum("nchw,dc->ndhw", x, p["W"]) + p["b"][None, :, None, None]
    return z, jnp.max(_windows(z), axis=0)


def maxpool_loss(p, x, y):
    _, pooled = _pool_forward(p, x)
    out = jnp.einsum("ndhw,dhw->n", pooled, p["V"])
    return 0.5 * jnp.mean((out - y) ** 2)


def maxpool_grad(p, x, y, bug=None):
    z, pooled = _pool_forward(p, x)
    out = jnp.einsum("ndhw,dhw->n", pooled, p["V"])
    dout = (out - y) / y.shape[0]
    dpool = dout[:, None, None, None] * p["V"][None]
    win = _windows(z)
    first = jnp.argmax(win, axis=0)  # the window's maximum (first one on a tie)
    s = z.shape[-1] - 1
    dz = jnp.zeros_like(z)
    for j, (a, b) in enumerate(OFFSETS):
        routed = dpool / 4 if bug == "average_backward" else jnp.where(first == j, dpool, 0)
        if bug == "overwrite_overlaps":  # a scatter with set: an entry keeps only the last window's share
            dz = dz.at[..., a : a + s, b : b + s].set(routed)
        else:
            dz = dz.at[..., a : a + s, b : b + s].add(routed)
    return {"W": jnp.einsum("ndhw,nchw->dc", dz, x), "b": dz.sum((0, 2, 3)), "V": jnp.einsum("n,ndhw->dhw", dout, pooled)}


MAXPOOL_OVERLAP = model(
    "maxpool_overlap",
    maxpool_init,
    maxpool_loss,
    maxpool_grad,
    {"overwrite_overlaps": ("['W']", "gross"), "average_backward": ("['W']", "gross")},
)

# ---------------------------------------------------------------- spatial BatchNorm (N, C, H, W) and GroupNorm

NORM_EPS = 1e-5


def _norm_init(n, c_in, c, side, w_scale):
    def init(key, dtype):
        k = jax.random.split(key, 5)
        params = {
            "W": normal(k[0], (c, c_in), dtype, w_scale),
            "gamma": 1 + normal(k[1], (c,), dtype, 0.2),
            "beta": normal(k[2], (c,), dtype, 0.2),
        }
        return params, (normal(k[3], (n, c_in, side, side), dtype), normal(k[4], (n, c, side, side), dtype))

    return init


def _standardise(z, axes, eps=NORM_EPS):
    mu = jnp.mean(z, axis=axes, keepdims=True)
    var = jnp.mean((z - mu) ** 2, axis=axes, keepdims=True)
    sigma = jnp.sqrt(var + eps)
    return (z - mu) / sigma, sigma


def _standardise_backward(dzh, zh, sigma, axes, forgot=None):
    mean = lambda a: jnp.mean(a, axis=axes, keepdims=True)  # noqa: E731
    if forgot == "mean":
        return (dzh - zh * mean(dzh * zh)) / sigma
    if forgot == "variance":
        return (dzh - mean(dzh)) / sigma
    return (dzh - mean(dzh) - zh * mean(dzh * zh)) / sigma


def _affine(p, zh):
    return p["gamma"][None, :, None, None] * zh + p["beta"][None, :, None, None]


def _norm_model(name, groups, init, bugs):
    """A 1×1 convolution, then BatchNorm over (N, H, W) per channel (groups=None) or GroupNorm
    over (C/groups, H, W) per sample and group; loss Σ c·tanh(γ ẑ + β)."""

    def standardise(z, eps=NORM_EPS):
        if groups is None:
            return _standardise(z, (0, 2, 3), eps)
        n, c, h, w = z.shape
        zh, sigma = _standardise(z.reshape(n, groups, c // groups, h, w), (2, 3, 4), eps)
        return zh.reshape(z.shape), sigma

    def backward(dzh, zh, sigma, forgot):
        if groups is None:
            return _standardise_backward(dzh, zh, sigma, (0, 2, 3), forgot)
        n, c, h, w = zh.shape
        shape = (n, groups, c // groups, h, w)
        return _standardise_backward(dzh.reshape(shape), zh.reshape(shape), sigma, (2, 3, 4), forgot).reshape(zh.shape)

    def loss(p, x, c):
        zh, _ = standardise(jnp.einsum("nchw,dc->ndhw", x, p["W"]))
        return jnp.sum(c * jnp.tanh(_affine(p, zh)))

    def grad(p, x, c, bug=None):
        z = jnp.einsum("nchw,dc->ndhw", x, p["W"])
        zh, sigma = standardise(z)
        y = jnp.tanh(_affine(p, zh))
        dy = c * (1 - y**2)
        dgamma, dbeta = (dy * zh).sum((0, 2, 3)), dy.sum((0, 2, 3))
        if bug == "eps_omitted_backward":
            zh, sigma = standardise(z, eps=0.0)
        forgot = {"forgot_mean_term": "mean", "forgot_variance_term": "variance"}.get(bug)
        dz = backward(dy * p["gamma"][None, :, None, None], zh, sigma, forgot)
        return {"W": jnp.einsum("ndhw,nchw->dc", dz, x), "beta": dbeta, "gamma": dgamma}

    return model(name, init, loss, grad, bugs)


BATCHNORM_SPATIAL = _norm_model(
    "batchnorm_spatial",
    None,
    _norm_init(4, 2, 3, 4, 0.2),
    {"forgot_mean_term": ("['W']", "gross"), "eps_omitted_backward": ("['W']", "subtle")},
)
GROUPNORM = _norm_model(
    "groupnorm",
    2,
    _norm_init(2, 3, 4, 3, 0.05),
    {"forgot_variance_term": ("['W']", "gross"), "eps_omitted_backward": ("['W']", "subtle")},
)

# ---------------------------------------------------------------- Σ sin(W x) with |W x| ~ 100s


def sin_init(key, dtype):
    k = jax.random.split(key, 2)
    # |W x| ~ 120 (standard deviation): sin's rounding is u·|W x| per term, the dots' summation order matters
    return {"W": normal(k[0], (4, 64), dtype, 15.0)}, (normal(k[1], (64, 4), dtype),)


def sin_loss(p, x):
    return jnp.sum(jnp.sin(p["W"] @ x))


def sin_grad(p, x, bug=None):
    W = p["W"] * (1 + 3e-6) if bug == "stale_params" else p["W"]  # the gradient taken at a slightly different copy
    c = jnp.cos(W @ x)
    if bug == "first_sample_only":  # the sum over samples dropped
        return {"W": c[:, :1] @ x[:, :1].T}
    return {"W": c @ x.T}


LARGE_ARG_SIN = model(
    "large_arg_sin", sin_init, sin_loss, sin_grad, {"first_sample_only": ("['W']", "gross"), "stale_params": ("['W']", "subtle")}
)

# ---------------------------------------------------------------- the classic course network (np.random.seed(1))


def _course_point():
    rng = np.random.RandomState(1)  # the same stream as np.random.seed(1); np.random.randn
    x = rng.randn(4, 3)
    y = np.array([1, 1, 0])
    params = {
        "W1": rng.randn(5, 4),
        "b1": rng.randn(5, 1),
        "W2": rng.randn(3, 5),
        "b2": rng.randn(3, 1),
        "W3": rng.randn(1, 3),
        "b3": rng.randn(1, 1),
    }
    return params, x, y


COURSE_PARAMS, COURSE_X, COURSE_Y = _course_point()


def classic_init(key, dtype):
    """The course's point at `np.random.seed(1)`, whatever the key."""
    params = {k: jnp.asarray(v, dtype) for k, v in COURSE_PARAMS.items()}
    return params, (jnp.asarray(COURSE_X, dtype), jnp.asarray(COURSE_Y, dtype)[None])


def classic_random_init(key, dtype):
    """The course's data, random params of the course's shapes (standard normal, as randn)."""
    ks = jax.random.split(key, len(COURSE_PARAMS))
    params = {k: normal(kk, v.shape, dtype) for kk, (k, v) in zip(ks, COURSE_PARAMS.items())}
    return params, (jnp.asarray(COURSE_X, dtype), jnp.asarray(COURSE_Y, dtype)[None])


def _sigmoid(z):
    return 1 / (1 + jnp.exp(-z))


def _course_forward(p, X):
    Z1 = p["W1"] @ X + p["b1"]
    A1 = _act(Z1, 0.0)
    Z2 = p["W2"] @ A1 + p["b2"]
    A2 = _act(Z2, 0.0)
    Z3 = p["W3"] @ A2 + p["b3"]
    return A1, A2, _sigmoid(Z3)


def classic_loss(p, X, Y):
    _, _, A3 = _course_forward(p, X)
    m = X.shape[1]
    logprobs = -jnp.log(A3) * Y - jnp.log(1 - A3) * (1 - Y)
    return jnp.sum(logprobs) / m


def classic_grad(p, X, Y, bug=None):
    """The course's backward_propagation_n, with its two planted bugs as `dW2_times_2` and `db1_times_4`."""
    m = X.shape[1]
    A1, A2, A3 = _course_forward(p, X)
    dZ3 = A3 - Y
    dW3 = 1.0 / m * dZ3 @ A2.T
    db3 = 1.0 / m * jnp.sum(dZ3, axis=1, keepdims=True)
    dA2 = p["W3"].T @ dZ3
    dZ2 = dA2 * (jnp.real(A2) > 0)
    dW2 = 1.0 / m * dZ2 @ A1.T * (2 if bug == "dW2_times_2" else 1)
    db2 = 1.0 / m * jnp.sum(dZ2, axis=1, keepdims=True)
    dA1 = p["W2"].T @ dZ2
    dZ1 = dA1 * (jnp.real(A1) > 0)
    dW1 = 1.0 / m * dZ1 @ X.T
    db1 = (4.0 if bug == "db1_times_4" else 1.0) / m * jnp.sum(dZ1, axis=1, keepdims=True)
    return {"W1": dW1, "W2": dW2, "W3": dW3, "b1": db1, "b2": db2, "b3": db3}


COURSE_BUGS = {"dW2_times_2": ("['W2']", "gross"), "db1_times_4": ("['b1']", "gross")}
CLASSIC_NET = model("classic_net", classic_init, classic_loss, classic_grad, COURSE_BUGS)
CLASSIC_NET_RANDOM = model("classic_net_random", classic_random_init, classic_loss, classic_grad, COURSE_BUGS)

# ---------------------------------------------------------------- a loss computed partly in bfloat16 and float16


def mixed_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {"W1": normal(k[0], (4, 5), dtype, 0.6), "W2": normal(k[1], (5, 2), dtype, 0.6), "v": normal(k[2], (4,), dtype, 0.5)}
    return params, (normal(k[3], (6, 4), dtype), normal(k[4], (6, 2), dtype))


def _mixed_loss(p, x, y, cast=True):
    low = (lambda a, t: a.astype(t).astype(x.dtype)) if cast else (lambda a, t: a)
    h = jnp.tanh(low(x @ p["W1"], jnp.bfloat16))  # the hidden layer's pre-activations in bfloat16
    out = h @ p["W2"]
    side = low(jnp.sum(jnp.sin(x @ p["v"])), jnp.float16)  # a side term in float16
    return 0.5 * jnp.mean((out - y) ** 2) + side


def mixed_loss(p, x, y):
    return _mixed_loss(p, x, y)


def exact_mixed_loss(p, x, y):
    """The same loss without the casts: what `mixed_grad` differentiates."""
    return _mixed_loss(p, x, y, cast=False)


def mixed_grad(p, x, y, bug=None):
    h = jnp.tanh(x @ p["W1"])
    out = h @ p["W2"]
    dout = (out - y) / out.size
    dz = (dout @ p["W2"].T) * (1 - h**2)
    dv = x.T @ jnp.cos(x @ p["v"])
    return {"W1": x.T @ dz, "W2": h.T @ dout * (2 if bug == "W2_times_2" else 1), "v": -dv if bug == "sign_v" else dv}


MIXED_PRECISION = model(
    "mixed_precision", mixed_init, mixed_loss, mixed_grad, {"W2_times_2": ("['W2']", "gross"), "sign_v": ("['v']", "gross")}
)

# ---------------------------------------------------------------- a correct gradient rounded through float32


def rounded_init(key, dtype):
    k = jax.random.split(key, 4)
    params = {"W": normal(k[0], (4, 3), dtype, 0.7), "b": normal(k[1], (3,), dtype, 0.3)}
    return params, (normal(k[2], (6, 4), dtype), normal(k[3], (6, 3), dtype))


def rounded_loss(p, x, c):
    return jnp.sum(c * jnp.tanh(x @ p["W"] + p["b"][None]))


def rounded_grad(p, x, c, bug=None):
    dz = c * (1 - jnp.tanh(x @ p["W"] + p["b"][None]) ** 2)
    g = {"W": x.T @ dz * (2 if bug == "W_times_2" else 1), "b": dz.sum(0) * (1 + 1e-3 if bug == "b_off_1e-3" else 1)}
    return jax.tree.map(lambda a: a.astype(jnp.float32).astype(a.dtype), g)


F32_ROUNDED_GRAD = model(
    "f32_rounded_grad",
    rounded_init,
    rounded_loss,
    rounded_grad,
    {"W_times_2": ("['W']", "gross"), "b_off_1e-3": ("['b']", "subtle")},
)

ALARMS = [
    RELU_MLP4,
    LEAKY_RELU_MLP4,
    DROPOUT_RELU_MLP,
    RESIDUAL_RELU_ZERO,
    MAXPOOL_OVERLAP,
    BATCHNORM_SPATIAL,
    GROUPNORM,
    LARGE_ARG_SIN,
    CLASSIC_NET,
    CLASSIC_NET_RANDOM,
    MIXED_PRECISION,
    F32_ROUNDED_GRAD,
]
# jax.grad of these differs from their hand-written gradient by more than float64 rounding (the casts)
EXACT_LOSS = {MIXED_PRECISION.name: exact_mixed_loss}
# not complex-safe: the casts to bfloat16/float16 drop the imaginary part
NOT_COMPLEX_SAFE = {MIXED_PRECISION.name}
