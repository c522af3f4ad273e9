"""JAX's own differentiable ops, each as a one-op model: `OPS`, a list of `Model`.

Op k has params `{"w": w}` (and `{"w": w, "v": v}` for binary ops whose two operands are
both differentiated), drawn in the op's valid domain and away from its kinks, ties and
singularities, so that the correct gradient, `jax.grad` of the loss, is mathematically
exact there. The loss is `sum(c * op(w, ...))` with a fixed random `c` (for a
complex-valued op, the loss uses |op|², which is real). Each op has three planted bugs
on `['w']`:

- `entry_1e-3`: the largest-magnitude entry of the gradient × (1 + 1e-3) (subtle);
- `entry_1e-2`: the same entry × (1 + 1e-2) (moderate: leaves have at most 24 entries);
- `times_2`: the whole leaf × 2 (gross).

`OPS_NOT_COMPLEX_SAFE` names the ops whose loss cannot be evaluated at complex
parameters (or not analytically: comparisons, |·|, erf, Hermitian solvers ...).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.fft as jfft
import jax.scipy.linalg as jsl
import jax.scipy.special as jsp
from jax import lax

from ._model import Model

SHAPE = (2, 3)
BUG_TAGS = {"entry_1e-3": "subtle", "entry_1e-2": "moderate", "times_2": "gross"}

# ---------------------------------------------------------------- initialisers: (key, shape, dtype) -> array


def normal(scale=1.0):
    return lambda key, shape, dtype: scale * jax.random.normal(key, shape, dtype)


def uniform(lo, hi):
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, lo, hi)


def away0(lo=0.3, hi=2.0):
    """|w| in [lo, hi] with a random sign: away from a kink at 0."""

    def init(key, shape, dtype):
        k1, k2 = jax.random.split(key)
        return jnp.where(jax.random.bernoulli(k1, 0.5, shape), 1, -1).astype(dtype) * jax.random.uniform(k2, shape, dtype, lo, hi)

    return init


def apart(lo=-2.0, hi=2.0):
    """Distinct values at least (hi - lo) / (n - 1) · 0.8 apart, in random order: no ties for sort, max, ..."""

    def init(key, shape, dtype):
        k1, k2 = jax.random.split(key)
        n = 1
        for s in shape:
            n *= s
        grid = jnp.linspace(lo, hi, n, dtype=dtype) + jax.random.uniform(k1, (n,), dtype, -0.1, 0.1) * (hi - lo) / max(n - 1, 1)
        return jax.random.permutation(k2, grid).reshape(shape)

    return init


def well_conditioned(key, shape, dtype):
    return 2 * jnp.eye(shape[0], dtype=dtype) + 0.3 * jax.random.normal(key, shape, dtype)


def spd(key, shape, dtype):
    a = jax.random.normal(key, shape, dtype)
    return a @ a.T / shape[0] + jnp.eye(shape[0], dtype=dtype)


def symmetric_distinct(key, shape, dtype):
    """Q diag(1, 2.5, 4, ...) Qᵀ plus a small symmetric perturbation: eigenvalues well apart."""
    k1, k2 = jax.random.split(key)
    q, _ = jnp.linalg.qr(jax.random.normal(k1, shape, dtype))
    e = 0.1 * jax.random.normal(k2, shape, dtype)
    return q @ jnp.diag(1 + 1.5 * jnp.arange(shape[0], dtype=dtype)) @ q.T + (e + e.T) / 2


def distinct_singular(key, shape, dtype):
    k1, k2 = jax.random.split(key)
    u, _ = jnp.linalg.qr(jax.random.normal(k1, (shape[0], shape[0]), dtype))
    v, _ = jnp.linalg.qr(jax.random.normal(k2, (shape[1], shape[1]), dtype))
    s = (
        jnp.zeros(shape, dtype)
        .at[jnp.arange(min(shape)), jnp.arange(min(shape))]
        .set(1 + 1.2 * jnp.arange(min(shape), dtype=dtype))
    )
    return u @ s @ v.T


def lower_well_conditioned(key, shape, dtype):
    return jnp.tril(well_conditioned(key, shape, dtype))


# ---------------------------------------------------------------- the op models


def _bugs(loss_fn):
    g = jax.grad(loss_fn)

    def entry(delta, params, *args):
        d = g(params, *args)
        w = jnp.ravel(d["w"])
        i = jnp.argmax(jnp.abs(w))
        return {**d, "w": w.at[i].multiply(1 + delta).reshape(d["w"].shape)}

    def times_2(params, *args):
        d = g(params, *args)
        return {**d, "w": 2 * d["w"]}

    return {
        "entry_1e-3": (functools.partial(entry, 1e-3), "['w']"),
        "entry_1e-2": (functools.partial(entry, 1e-2), "['w']"),
        "times_2": (times_2, "['w']"),
    }


def op(name, fn, w=None, shape=SHAPE, v=None, v_shape=None, data=None, abs2=False):
    """A one-op Model: loss sum(c * fn(w[, v], *data)) (|fn|² when abs2).

    w, v: initialisers of the differentiated operands (v: a second param leaf); data:
    (key, dtype) -> tuple of fixed extra operands.
    """
    w_init = w or normal()

    def init(key, dtype):
        kw, kv, kd, kc = jax.random.split(key, 4)
        params = {"w": w_init(kw, shape, dtype)}
        if v is not None:
            params["v"] = v(kv, v_shape or shape, dtype)
        extra = data(kd, dtype) if data else ()
        out = jax.eval_shape(lambda p, e: value(p, *e), params, extra)
        return params, (jax.random.normal(kc, out.shape, dtype), *extra)

    def value(params, *extra):
        operands = (params["w"], params["v"]) if "v" in params else (params["w"],)
        y = fn(*operands, *extra)
        return jnp.real(y * jnp.conj(y)) if abs2 else y

    def loss_fn(params, c, *extra):
        return jnp.sum(c * value(params, *extra))

    return Model(name, init, loss_fn, jax.grad(loss_fn), _bugs(loss_fn), BUG_TAGS)


def _normal_data(*shapes, scale=1.0):
    return lambda key, dtype: tuple(
        scale * jax.random.normal(k, s, dtype) for k, s in zip(jax.random.split(key, len(shapes)), shapes)
    )


def _const(*arrays):
    return lambda key, dtype: tuple(jnp.asarray(a) for a in arrays)


def _image(shape=(1, 2, 5, 5)):
    return _normal_data(shape)


IDX = (0, 2, 2, 5, 1, 0)  # repeated ids into 6 entries
NCHW = ("NCHW", "OIHW", "NCHW")
SQ = (3, 3)

N = normal
U = uniform
nn = jax.nn

OPS: list[Model] = [
    # ------------------------------------------------ unary elementwise
    op("sin", jnp.sin),
    op("cos", jnp.cos),
    op("tan", jnp.tan, U(-1.0, 1.0)),
    op("arcsin", jnp.arcsin, U(-0.8, 0.8)),
    op("arccos", jnp.arccos, U(-0.8, 0.8)),
    op("arctan", jnp.arctan),
    op("sinh", jnp.sinh),
    op("cosh", jnp.cosh),
    op("tanh", jnp.tanh),
    op("arcsinh", jnp.arcsinh),
    op("arccosh", jnp.arccosh, U(1.2, 3.0)),
    op("arctanh", jnp.arctanh, U(-0.8, 0.8)),
    op("exp", jnp.exp),
    op("exp2", jnp.exp2),
    op("expm1", jnp.expm1),
    op("log", jnp.log, U(0.3, 3.0)),
    op("log1p", jnp.log1p, U(-0.5, 2.0)),
    op("log2", jnp.log2, U(0.3, 3.0)),
    op("log10", jnp.log10, U(0.3, 3.0)),
    op("sqrt", jnp.sqrt, U(0.3, 3.0)),
    op("cbrt", jnp.cbrt, U(0.3, 3.0)),
    op("square", jnp.square),
    op("reciprocal", jnp.reciprocal, away0()),
    op("abs", jnp.abs, away0()),
    op("integer_pow_3", lambda w: lax.integer_pow(w, 3)),
    op("float_power_2.5", lambda w: jnp.float_power(w, 2.5).astype(w.dtype), U(0.3, 3.0)),
    op("sinc", jnp.sinc, away0(0.2, 1.5)),
    op("deg2rad", jnp.deg2rad),
    op("rsqrt", lax.rsqrt, U(0.3, 3.0)),
    op("logistic", lax.logistic),
    op("sigmoid", nn.sigmoid),
    op("softplus", nn.softplus),
    op("gelu_tanh", lambda w: nn.gelu(w, approximate=True)),
    op("gelu_erf", lambda w: nn.gelu(w, approximate=False)),
    op("silu", nn.silu),
    op("elu", nn.elu, away0()),
    op("selu", nn.selu, away0()),
    op("celu", nn.celu, away0()),
    op("log_sigmoid", nn.log_sigmoid),
    op("relu", nn.relu, away0()),
    op("leaky_relu", nn.leaky_relu, away0()),
    op("relu6", nn.relu6, away0(0.3, 5.0)),
    op("hard_tanh", nn.hard_tanh, U(-0.9, 0.9)),
    op("hard_swish", nn.hard_swish, U(-2.5, 2.5)),
    op("mish", nn.mish),
    op("soft_sign", nn.soft_sign, away0()),
    op("squareplus", nn.squareplus),
    op("sparse_plus", nn.sparse_plus, U(-0.9, 0.9)),
    op("erf", jsp.erf),
    op("erfc", jsp.erfc),
    op("erfinv", jsp.erfinv, U(-0.8, 0.8)),
    op("gammaln", jsp.gammaln, U(0.5, 4.0)),
    op("digamma", jsp.digamma, U(0.5, 4.0)),
    op("polygamma_1", lambda w: jsp.polygamma(1, w), U(0.5, 4.0)),
    op("gamma", jsp.gamma, U(0.5, 3.0)),
    op("expit", jsp.expit),
    op("logit", jsp.logit, U(0.2, 0.8)),
    op("ndtr", jsp.ndtr),
    op("ndtri", jsp.ndtri, U(0.1, 0.9)),
    op("log_ndtr", jsp.log_ndtr),
    op("i0e", jsp.i0e, away0(0.2, 2.0)),
    op("i1e", jsp.i1e, away0(0.2, 2.0)),
    op("i0", jsp.i0),
    op("i1", jsp.i1),
    op("entr", jsp.entr, U(0.1, 2.0)),
    op("spence", jsp.spence, U(0.2, 0.9)),
    op("expi", jsp.expi, U(0.3, 2.0)),
    op("exp1", jsp.exp1, U(0.3, 2.0)),
    op("gammainc_x", lambda w: jsp.gammainc(2.0, w), U(0.5, 4.0)),
    # ------------------------------------------------ binary elementwise, both operands differentiated
    op("multiply", jnp.multiply, v=N()),
    op("divide", jnp.divide, v=away0(0.5, 2.0)),
    op("subtract", jnp.subtract, v=N()),
    op("power", jnp.power, U(0.3, 2.0), v=U(-1.5, 1.5)),
    op("arctan2", jnp.arctan2, v=U(0.5, 2.0)),
    op("hypot", jnp.hypot, away0(), v=away0()),
    op("logaddexp", jnp.logaddexp, v=N()),
    op("logaddexp2", jnp.logaddexp2, v=N()),
    op("maximum", jnp.maximum, apart(), v=apart(-1.9, 2.1)),
    op("minimum", jnp.minimum, apart(), v=apart(-1.9, 2.1)),
    op("xlogy", jsp.xlogy, U(0.2, 2.0), v=U(0.3, 3.0)),
    op("xlog1py", jsp.xlog1py, U(0.2, 2.0), v=U(-0.5, 2.0)),
    op("betaln", jsp.betaln, U(0.5, 3.0), v=U(0.5, 3.0)),
    op("kl_div", jsp.kl_div, U(0.2, 2.0), v=U(0.2, 2.0)),
    op("rel_entr", jsp.rel_entr, U(0.2, 2.0), v=U(0.2, 2.0)),
    op("where_mask", lambda w, m: jnp.where(m, jnp.sin(w), w**2), data=_const([[True, False, True], [False, True, True]])),
    op("clip_interior", lambda w: jnp.clip(w, -3.0, 3.0), U(-2.0, 2.0)),
    op("clamp_interior", lambda w: lax.clamp(jnp.asarray(-3.0, w.dtype), w, jnp.asarray(3.0, w.dtype)), U(-2.0, 2.0)),
    op("select_by_sign", lambda w: jnp.where(w > 0, w**2, jnp.exp(w)), away0()),
    # ------------------------------------------------ reductions
    op("sum", lambda w: jnp.sum(w**2, axis=1)),
    op("mean", jnp.mean),
    op("prod", jnp.prod, away0(0.5, 1.5)),
    op("max", jnp.max, apart()),
    op("min_axis1", lambda w: jnp.min(w, axis=1), apart()),
    op("var", lambda w: jnp.var(w, axis=1)),
    op("std", jnp.std),
    op("logsumexp", jsp.logsumexp),
    op("nn_logsumexp_axis1", lambda w: nn.logsumexp(w, axis=1)),
    op("softmax", lambda w: nn.softmax(w, axis=1)),
    op("log_softmax", lambda w: nn.log_softmax(w, axis=1)),
    op("standardize", lambda w: nn.standardize(w, axis=1)),
    op("glu", lambda w: nn.glu(w, axis=1), shape=(2, 4)),
    op("norm_fro", jnp.linalg.norm),
    op("norm_axis1", lambda w: jnp.linalg.norm(w, axis=1)),
    op("norm_l1", lambda w: jnp.linalg.norm(jnp.ravel(w), 1), away0()),
    op("ptp", jnp.ptp, apart()),
    op("median", lambda w: jnp.median(w, axis=1), apart(), shape=(2, 5)),
    op("quantile", lambda w: jnp.quantile(w, 0.3), apart()),
    op(
        "average_weighted",
        lambda w, a: jnp.average(w, axis=1, weights=a),
        data=lambda key, dtype: (jax.random.uniform(key, SHAPE, dtype, 0.5, 2.0),),
    ),
    # ------------------------------------------------ cumulative
    op("cumsum", lambda w: jnp.cumsum(w, axis=1)),
    op("cumsum_reverse", lambda w: lax.cumsum(w, axis=1, reverse=True)),
    op("cumprod", lambda w: jnp.cumprod(w, axis=1), U(0.5, 1.5)),
    op("cummax", lambda w: lax.cummax(w, axis=1), apart()),
    op("cumlogsumexp", lambda w: lax.cumlogsumexp(w, axis=1)),
    op("diff", lambda w: jnp.diff(w**2, axis=1)),
    op("associative_scan", lambda w: lax.associative_scan(jnp.multiply, w, axis=1), U(0.5, 1.5)),
    # ------------------------------------------------ linear algebra
    op("matmul", lambda w, x: w @ x, shape=SQ, data=_normal_data((3, 2))),
    op("matmul_self", lambda w: w @ w, shape=SQ),
    op("einsum", lambda w, x: jnp.einsum("ij,jk,ik->i", w, x, w), shape=SQ, data=_normal_data(SQ)),
    op("tensordot", lambda w, x: jnp.tensordot(w, x, axes=([1], [0])), shape=SQ, data=_normal_data((3, 2, 2))),
    op("kron", lambda w: jnp.kron(w, w), shape=(2, 2)),
    op("outer", lambda w: jnp.outer(w, jnp.sin(w)), shape=(4,)),
    op("cross", lambda w, x: jnp.cross(w, x), shape=(2, 3), data=_normal_data((2, 3))),
    op("vdot", lambda w, x: jnp.vdot(w, x) * jnp.sum(w), shape=(6,), data=_normal_data((6,))),
    op("trace", lambda w: jnp.trace(w @ w.T), shape=SQ),
    op("solve", lambda w, b: jnp.linalg.solve(w, b), well_conditioned, shape=SQ, data=_normal_data((3, 2))),
    op("inv", jnp.linalg.inv, well_conditioned, shape=SQ),
    op("det", jnp.linalg.det, well_conditioned, shape=SQ),
    op("slogdet", lambda w: jnp.linalg.slogdet(w)[1], well_conditioned, shape=SQ),
    op("cholesky", jnp.linalg.cholesky, spd, shape=SQ),
    op("eigh_values", lambda w: jnp.linalg.eigh((w + w.T) / 2)[0], symmetric_distinct, shape=SQ),
    op("eigh_vectors", lambda w: jnp.linalg.eigh((w + w.T) / 2)[1] ** 2, symmetric_distinct, shape=SQ),
    op("eigvalsh", lambda w: jnp.linalg.eigvalsh(w, symmetrize_input=True), symmetric_distinct, shape=SQ),
    op("svd_values", lambda w: jnp.linalg.svd(w, compute_uv=False), distinct_singular, shape=(3, 2)),
    op("norm_nuclear", lambda w: jnp.linalg.norm(w, "nuc"), distinct_singular, shape=SQ),
    op("norm_spectral", lambda w: jnp.linalg.norm(w, 2), distinct_singular, shape=SQ),
    op("qr_r", lambda w: jnp.linalg.qr(w)[1], well_conditioned, shape=SQ),
    op("qr_q", lambda w: jnp.linalg.qr(w)[0], well_conditioned, shape=SQ),
    op("pinv", jnp.linalg.pinv, distinct_singular, shape=(3, 2)),
    op("matrix_power", lambda w: jnp.linalg.matrix_power(w, 3), shape=SQ),
    op("expm", jsl.expm, normal(0.5), shape=SQ),
    op(
        "solve_triangular",
        lambda w, b: jsl.solve_triangular(w, b, lower=True),
        lower_well_conditioned,
        shape=SQ,
        data=_normal_data((3, 2)),
    ),
    op("cho_solve", lambda w, b: jsl.cho_solve(jsl.cho_factor((w + w.T) / 2), b), spd, shape=SQ, data=_normal_data((3, 2))),
    op("lstsq", lambda w, b: jnp.linalg.lstsq(w, b)[0], distinct_singular, shape=(3, 2), data=_normal_data((3,))),
    op(
        "tridiagonal_solve",
        lambda w, b: lax.linalg.tridiagonal_solve(w[0], 3 + w[1], w[2], b),
        shape=SQ,
        data=_normal_data((3, 1)),
    ),
    # ------------------------------------------------ indexing, gather, scatter, shape ops
    op("gather_repeated", lambda w, i: w[i], shape=(6,), data=_const(IDX)),
    op("take_axis1", lambda w, i: jnp.take(w, i, axis=1), data=_const([2, 0, 0, 1])),
    op("take_along_axis", lambda w, i: jnp.take_along_axis(w, i, axis=1), data=_const([[2, 0], [1, 1]])),
    op("scatter_add_repeated", lambda w, i: jnp.zeros(4, w.dtype).at[i].add(w), shape=(6,), data=_const([0, 2, 2, 3, 0, 1])),
    op("scatter_set", lambda w, i: jnp.zeros(8, w.dtype).at[i].set(w), shape=(6,), data=_const([7, 2, 4, 0, 5, 1])),
    op(
        "scatter_mul",
        lambda w, i: jnp.ones(8, w.dtype).at[i].multiply(w, unique_indices=True),
        away0(0.5, 1.5),
        shape=(6,),
        data=_const([7, 2, 4, 0, 5, 1]),
    ),
    op("segment_sum", lambda w, s: jax.ops.segment_sum(w, s, num_segments=3), shape=(6,), data=_const([0, 0, 1, 2, 2, 2])),
    op(
        "segment_max",
        lambda w, s: jax.ops.segment_max(w, s, num_segments=3),
        apart(),
        shape=(6,),
        data=_const([0, 0, 1, 2, 2, 2]),
    ),
    op("dynamic_slice", lambda w: lax.dynamic_slice(w, (1, 1), (1, 2))),
    op("dynamic_update_slice", lambda w, x: lax.dynamic_update_slice(x, w**2, (1, 2)), shape=(2, 2), data=_normal_data((4, 4))),
    op("roll", lambda w: jnp.roll(w, 2) * jnp.arange(1, 7).reshape(SHAPE)),
    op("flip_transpose", lambda w: jnp.flip(w, 1).T @ w),
    op("reshape", lambda w: jnp.reshape(w, (3, 2)) @ w),
    op("concatenate", lambda w: jnp.concatenate([w, w**2], axis=0)),
    op("stack", lambda w: jnp.stack([w, jnp.sin(w)], axis=-1)),
    op("pad_constant", lambda w: jnp.pad(w, ((1, 0), (0, 2)), constant_values=0.5)),
    op("pad_reflect", lambda w: jnp.pad(w**2, ((0, 0), (2, 1)), mode="reflect")),
    op("tile_repeat", lambda w: jnp.tile(w, (1, 2)) * jnp.repeat(w, 2, axis=1)),
    op("triu", lambda w: jnp.triu(w @ w.T + w[:, :1])),
    op("diagonal", lambda w: jnp.diagonal(w) * jnp.diag(jnp.diag(w)).sum(), shape=SQ),
    op("strided_slice", lambda w: w[::-1, ::2]),
    op("broadcast_to", lambda w: jnp.broadcast_to(w[:, None, :], (2, 2, 3)) * jnp.arange(1.0, 3.0)[None, :, None]),
    # ------------------------------------------------ sorting (distinct values)
    op("sort", lambda w: jnp.sort(w, axis=None) * jnp.arange(1, 7), apart()),
    op("sort_axis1", lambda w: jnp.sort(w, axis=1), apart()),
    op("argsort_gather", lambda w: w.ravel()[jnp.argsort(w.ravel())] ** 2, apart()),
    op("top_k", lambda w: lax.top_k(w.ravel(), 3)[0], apart()),
    op("lax_sort_pairs", lambda w, v: lax.sort((w, v), num_keys=1)[1] * w, apart(), v=N(), shape=(6,)),
    # ------------------------------------------------ convolutions and pooling
    op(
        "conv2d_kernel",
        lambda w, x: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NCHW),
        shape=(1, 2, 3, 3),
        data=_image(),
    ),
    op(
        "conv2d_input",
        lambda w, k: lax.conv_general_dilated(w, k, (1, 1), "VALID", dimension_numbers=NCHW),
        shape=(1, 1, 4, 4),
        data=_normal_data((2, 1, 2, 2)),
    ),
    op(
        "conv2d_strided_dilated",
        lambda w, x: lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), rhs_dilation=(2, 1), dimension_numbers=NCHW),
        shape=(1, 2, 2, 2),
        data=_image(),
    ),
    op(
        "conv2d_depthwise",
        lambda w, x: lax.conv_general_dilated(x, w, (1, 1), "VALID", feature_group_count=2, dimension_numbers=NCHW),
        shape=(2, 1, 2, 2),
        data=_image(),
    ),
    op(
        "conv_transpose",
        lambda w, x: lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW")),
        shape=(2, 2, 2, 1),
        data=_normal_data((1, 2, 3, 3)),
    ),
    op("convolve_1d", lambda w, x: jnp.convolve(w, x, mode="full"), shape=(4,), data=_normal_data((3,))),
    op("correlate_1d", lambda w, x: jnp.correlate(x, w, mode="valid"), shape=(3,), data=_normal_data((6,))),
    op("convolve2d_scipy", lambda w, x: jax.scipy.signal.convolve2d(x, w, mode="valid"), shape=(2, 2), data=_normal_data((4, 4))),
    op("avg_pool", lambda w: lax.reduce_window(w**2, 0.0, lax.add, (2, 2), (1, 1), "VALID"), shape=(3, 4)),
    op("max_pool", lambda w: lax.reduce_window(w, -jnp.inf, lax.max, (2, 2), (2, 2), "VALID"), apart(), shape=(4, 4)),
    # ------------------------------------------------ FFT (real losses from |·|²)
    op("fft", jnp.fft.fft, abs2=True, shape=(6,)),
    op("rfft", jnp.fft.rfft, abs2=True, shape=(6,)),
    op("ifft", lambda w: jnp.fft.ifft(w * jnp.exp(1j * jnp.arange(6.0))), abs2=True, shape=(6,)),
    op("fft2", jnp.fft.fft2, abs2=True, shape=(2, 4)),
    op("irfft", lambda w: jnp.fft.irfft(jnp.fft.rfft(w) * jnp.arange(1.0, 5.0), n=6), shape=(6,)),
    op("dct", jfft.dct, shape=(6,)),
    # ------------------------------------------------ interpolation and polynomials
    op(
        "interp_fp",
        lambda w, x: jnp.interp(x, jnp.linspace(0, 1, 6), w),
        shape=(6,),
        data=lambda key, dtype: (jax.random.uniform(key, (5,), dtype, 0.05, 0.95),),
    ),
    op("interp_x", lambda w: jnp.interp(w, jnp.arange(-3.0, 4.0), jnp.arange(-3.0, 4.0) ** 2), U(-2.8, 2.8)),
    op("polyval_coeffs", lambda w, x: jnp.polyval(w, x), shape=(4,), data=_normal_data((5,))),
    op("polyval_x", lambda w: jnp.polyval(jnp.array([0.5, -1.0, 2.0, 0.3]), w)),
    # ------------------------------------------------ control flow
    op(
        "scan_recurrence",
        lambda w, xs: lax.scan(lambda h, x: (jnp.tanh(h * w + x), h), jnp.zeros(3, w.dtype), xs)[1],
        shape=(3,),
        data=_normal_data((4, 3)),
    ),
    op("fori_loop_newton", lambda w: lax.fori_loop(0, 4, lambda i, y: 0.5 * (y + w / y), jnp.ones_like(w)), U(0.5, 3.0)),
    op("map", lambda w: lax.map(lambda r: jnp.sin(r) @ r, w)),
    op("cond_on_data", lambda w, flag: lax.cond(flag, jnp.sin, jnp.cos, w), data=_const(True)),
    op("checkpoint", lambda w: jax.checkpoint(lambda u: jnp.tanh(u) * u)(w)),
    op("custom_jvp_logsumexp", lambda w: jax.nn.logsumexp(w, axis=0, b=jnp.array([[1.0], [2.0]]))),
]

assert len({m.name for m in OPS}) == len(OPS)

# Measured (tests/test_corpus_ops.py checks it): the loss raises at complex parameters, returns a
# real value, or its complex-step derivative (step 1e-20, float64) differs from jax.grad.
OPS_NOT_COMPLEX_SAFE = {
    "abs",
    "arctan2",
    "betaln",
    "cbrt",
    "cho_solve",
    "cholesky",
    "clip_interior",
    "conv2d_depthwise",
    "conv2d_input",
    "conv2d_kernel",
    "conv2d_strided_dilated",
    "conv_transpose",
    "convolve2d_scipy",
    "convolve_1d",
    "correlate_1d",
    "cumlogsumexp",
    "digamma",
    "dynamic_update_slice",
    "eigh_values",
    "eigh_vectors",
    "eigvalsh",
    "entr",
    "erf",
    "erfc",
    "erfinv",
    "exp1",
    "expi",
    "fft",
    "fft2",
    "gammainc_x",
    "gammaln",
    "gelu_erf",
    "hypot",
    "i0",
    "i0e",
    "i1",
    "i1e",
    "ifft",
    "interp_x",
    "irfft",
    "kl_div",
    "log_ndtr",
    "log_sigmoid",
    "logaddexp",
    "logaddexp2",
    "lstsq",
    "median",
    "mish",
    "ndtr",
    "ndtri",
    "norm_axis1",
    "norm_fro",
    "norm_l1",
    "norm_nuclear",
    "norm_spectral",
    "pinv",
    "polygamma_1",
    "qr_q",
    "qr_r",
    "quantile",
    "rel_entr",
    "rfft",
    "slogdet",
    "soft_sign",
    "softplus",
    "spence",
    "standardize",
    "std",
    "svd_values",
    "top_k",
    "tridiagonal_solve",
    "var",
    "vdot",
}
