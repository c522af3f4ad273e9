"""Partial and sparse evaluation against the plain engine on randomly generated models.

A model is a random chain of operations on one activation `h`, each with its own
parameters and integer arguments: broadcasts of every rank and axis set (size-1 axes,
(k, 1) column-vector biases broadcast implicitly), reshape, transpose, squeeze and
expand_dims, static and dynamic slices, dynamic_update_slice, pad, concatenate, stack,
gather (embedding lookups, repeated ids) and scatter (`.at[].add`), `dot_general` with
every kind of dimension numbers (`@`, einsum on either side, batch dimensions),
reductions (sum, max, min, mean over axis sets), cumsum, flip, convolutions (NCHW and
NHWC, strides, padding, dilation, feature groups), max pooling, `lax.scan`,
`lax.cond`, `jax.nn.relu` (a custom_jvp), a custom_vjp function, and `jax.jit`-wrapped
operations (pjit). For each model, `jgc.numeric_grad(..., partial_eval=True)` with every
leaf forced down the partial path, and then the sparse path, must equal the plain
engine's per coordinate within the rounding bound of tests/test_partial.py:
`_ROUNDING`·ε·max(1, |J|)/eps (both evaluate the loss at the same points; only the order
of the arithmetic differs). The worst ratio |partial − plain| / bound seen is printed at
the end of the module (`pytest -s`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

import jgc
from jgc import _partial
from jgc._partial import _cost

_ROUNDING = 16  # as in tests/test_partial.py
_MAX_SIZE = 72  # elements of the activation, so that a model checks in a few seconds
_EXAMPLES = int(os.environ.get("JGC_RANDOM_EXAMPLES", 4))  # hypothesis examples of the main test (more: set the variable)

_WORST: dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def _print_worst():
    yield
    print("\nworst |partial - plain| / rounding bound:", {k: round(v, 3) for k, v in sorted(_WORST.items())})


# ---------------------------------------------------------------- the model description


@dataclasses.dataclass
class Op:
    kind: str
    out: tuple  # the activation's shape after this operation
    static: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)  # name -> (shape, scale)
    args: dict = dataclasses.field(
        default_factory=dict
    )  # name -> ("x", shape) | ("ids", shape, high) | ("int", value) | ("ints", shape)
    jit: bool = False


@dataclasses.dataclass
class Model:
    ops: list


@jax.custom_vjp
def _sin_vjp(x):
    return jnp.sin(x)


_sin_vjp.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))

_ACTS = {
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "relu": jax.nn.relu,  # custom_jvp
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "square": lambda x: 0.5 * x * x,
    "leaky": lambda x: jnp.where(x > 0, x, 0.1 * x),
    "custom_vjp": _sin_vjp,
}


def _replace(shape, axis, n):
    return tuple(n if d == axis else s for d, s in enumerate(shape))


# ---------------------------------------------------------------- drawing operations
# Each takes (draw, shape, name) and returns an Op, or None when it does not apply to `shape`.


def _d_bias(draw, shape, name):
    ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    bshape = tuple(1 if o else n for o, n in zip(ones, shape, strict=True))
    return Op("bias", shape, {"mul": draw(st.booleans())}, {name: (bshape, 0.5)})


def _d_bcast(draw, shape, name):
    keep = sorted(draw(st.sets(st.sampled_from(range(len(shape))), max_size=len(shape))))
    bshape = tuple(1 if draw(st.integers(0, 3)) == 0 else shape[d] for d in keep)
    return Op("bcast", shape, {"dims": tuple(keep)}, {name: (bshape, 0.5)})


def _d_act(draw, shape, name):
    return Op("act", shape, {"fn": draw(st.sampled_from(sorted(_ACTS)))})


def _d_dense(draw, shape, name):
    axis, k = draw(st.integers(0, len(shape) - 1)), draw(st.integers(1, 4))
    side = draw(st.sampled_from(["right", "left"]))
    wshape = (shape[axis], k) if side == "right" else (k, shape[axis])
    matmul = draw(st.booleans()) and len(shape) == 2 and axis == (1 if side == "right" else 0)
    return Op(
        "dense", _replace(shape, axis, k), {"axis": axis, "side": side, "matmul": matmul}, {name: (wshape, shape[axis] ** -0.5)}
    )


def _d_bdot(draw, shape, name):
    if len(shape) < 2:
        return None
    b, a = draw(st.permutations(range(len(shape))))[:2]
    k = draw(st.integers(1, 3))
    free = [shape[d] for d in range(len(shape)) if d not in (a, b)]
    if draw(st.booleans()):  # activation on the left: (batch, free..., k)
        return Op(
            "bdot", (shape[b], *free, k), {"a": a, "b": b, "side": "right"}, {name: ((shape[b], shape[a], k), shape[a] ** -0.5)}
        )
    return Op("bdot", (shape[b], k, *free), {"a": a, "b": b, "side": "left"}, {name: ((shape[b], k, shape[a]), shape[a] ** -0.5)})


def _d_reshape(draw, shape, name):
    r = len(shape)
    how = draw(st.sampled_from(["merge", "split", "insert", "flatten", "refactor"]))
    if how == "merge" and r >= 2:
        i = draw(st.integers(0, r - 2))
        out = shape[:i] + (shape[i] * shape[i + 1],) + shape[i + 2 :]
    elif how == "split":
        i = draw(st.integers(0, r - 1))
        divs = [f for f in range(2, shape[i]) if shape[i] % f == 0]
        if not divs or r >= 4:
            return None
        f = draw(st.sampled_from(divs))
        out = shape[:i] + (f, shape[i] // f) + shape[i + 1 :]
    elif how == "insert" and r < 4:
        i = draw(st.integers(0, r))
        out = shape[:i] + (1,) + shape[i:]
    elif how == "flatten":
        out = (math.prod(shape),)
    elif how == "refactor":  # another factorization of the same size, e.g. (6, 4) -> (4, 6) or (3, 8)
        n = math.prod(shape)
        divs = [f for f in range(1, n + 1) if n % f == 0]
        f = draw(st.sampled_from(divs))
        out = (f, n // f)
    else:
        return None
    return Op("reshape", out)


def _d_transpose(draw, shape, name):
    return Op("transpose", None, {"perm": tuple(draw(st.permutations(range(len(shape)))))})


def _d_squeeze(draw, shape, name):
    ones = [d for d, n in enumerate(shape) if n == 1]
    if ones and len(shape) > 1:
        d = draw(st.sampled_from(ones))
        return Op("squeeze", shape[:d] + shape[d + 1 :], {"axis": d})
    if len(shape) < 4:
        d = draw(st.integers(0, len(shape)))
        return Op("expand", shape[:d] + (1,) + shape[d:], {"axis": d})
    return None


def _d_slice(draw, shape, name):
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    start, stop, step = draw(st.integers(0, n - 1)), draw(st.integers(1, n)), draw(st.integers(1, 3))
    size = len(range(start, stop, step))
    if size == 0:
        return None
    return Op("slice", _replace(shape, axis, size), {"axis": axis, "start": start, "stop": stop, "step": step})


def _d_dslice(draw, shape, name):
    axis = draw(st.integers(0, len(shape) - 1))
    size = draw(st.integers(1, shape[axis]))
    return Op(
        "dslice",
        _replace(shape, axis, size),
        {"axis": axis, "size": size},
        args={name: ("int", draw(st.integers(-1, shape[axis])))},
    )


def _d_dus(draw, shape, name):
    axis = draw(st.integers(0, len(shape) - 1))
    u = draw(st.integers(1, shape[axis]))
    from_h = draw(st.booleans())  # the update also depends on h: both operands change
    return Op(
        "dus",
        shape,
        {"axis": axis, "u": u, "from_h": from_h, "start": name + "_at"},
        {name: (_replace(shape, axis, u), 0.5)},
        {name + "_at": ("int", draw(st.integers(-1, shape[axis])))},
    )


def _d_pad(draw, shape, name):
    axis = draw(st.integers(0, len(shape) - 1))
    lo, hi, interior = draw(st.integers(-1, 2)), draw(st.integers(-1, 2)), draw(st.integers(0, 1))
    n = lo + hi + shape[axis] + (shape[axis] - 1) * interior
    if n < 1:
        return None
    return Op("pad", _replace(shape, axis, n), {"axis": axis, "cfg": (lo, hi, interior)})


def _d_concat(draw, shape, name):
    axis, m = draw(st.integers(0, len(shape) - 1)), draw(st.integers(1, 3))
    other = draw(st.sampled_from(["param", "h"]))
    m = shape[axis] if other == "h" else m
    params = {name: (_replace(shape, axis, m), 0.5)} if other == "param" else {}
    return Op(
        "concat", _replace(shape, axis, shape[axis] + m), {"axis": axis, "other": other, "first": draw(st.booleans())}, params
    )


def _d_stack(draw, shape, name):
    if len(shape) >= 4:
        return None
    axis = draw(st.integers(0, len(shape)))
    other = draw(st.sampled_from(["param", "h"]))
    params = {name: (shape, 0.5)} if other == "param" else {}
    return Op("stack", shape[:axis] + (2,) + shape[axis:], {"axis": axis, "other": other}, params)


def _d_gather(draw, shape, name):
    axis = draw(st.integers(0, len(shape) - 1))
    ids = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2 if len(shape) < 4 else 1)))
    return Op("gather", shape[:axis] + ids + shape[axis + 1 :], {"axis": axis}, args={name: ("ids", ids, shape[axis])})


def _d_scatter(draw, shape, name):
    how = draw(st.sampled_from(["add_rows", "into"]))
    m = draw(st.integers(1, 4))
    if how == "add_rows":  # h.at[ids].add(p): ids index axis 0 of h, with repeats
        return Op("scatter", shape, {"how": how}, {name: ((m,) + shape[1:], 0.5)}, {name + "_ids": ("ids", (m,), shape[0])})
    return Op(
        "scatter", (m,) + shape[1:], {"how": how, "m": m}, {}, {name + "_ids": ("ids", (shape[0],), m)}
    )  # zeros.at[ids].add(h)


def _d_reduce(draw, shape, name):
    fn = draw(st.sampled_from(["sum", "max", "min", "mean"]))
    axes = tuple(sorted(draw(st.sets(st.sampled_from(range(len(shape))), min_size=1))))
    keep = draw(st.booleans()) or len(axes) == len(shape)
    out = (
        tuple(1 if d in axes else n for d, n in enumerate(shape))
        if keep
        else tuple(n for d, n in enumerate(shape) if d not in axes)
    )
    return Op("reduce", out, {"fn": fn, "axes": axes, "keep": keep})


def _d_cumsum(draw, shape, name):
    return Op("cumsum", shape, {"axis": draw(st.integers(0, len(shape) - 1))})


def _d_flip(draw, shape, name):
    return Op("flip", shape, {"axis": draw(st.integers(0, len(shape) - 1))})


def _d_conv(draw, shape, name):
    if len(shape) not in (3, 4):
        return None
    nsp = len(shape) - 2
    layout = draw(st.sampled_from(["first", "last"]))  # NC(H)W or N(H)WC
    lhs = "NC" + "HW"[:nsp] if layout == "first" else "N" + "HW"[:nsp] + "C"
    rhs = "OI" + "HW"[:nsp] if draw(st.booleans()) else "HW"[:nsp] + "IO"
    c = shape[1] if layout == "first" else shape[-1]
    spatial = shape[2:] if layout == "first" else shape[1:-1]
    groups = 2 if c % 2 == 0 and draw(st.integers(0, 3)) == 0 else 1
    o = groups * draw(st.integers(1, 2))
    ks = tuple(draw(st.integers(1, min(3, s))) for s in spatial)
    strides = tuple(draw(st.integers(1, 2)) for _ in spatial)
    padding = draw(st.sampled_from(["VALID", "SAME", "explicit"]))
    if padding == "explicit":
        padding = tuple((draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in spatial)
    dilation = tuple(draw(st.integers(1, 2)) for _ in spatial) if draw(st.integers(0, 3)) == 0 else None
    kshape = {"O": o, "I": c // groups, **dict(zip("HW", ks))}
    kshape = tuple(kshape[ch] for ch in rhs)
    static = {"dn": (lhs, rhs, lhs), "strides": strides, "padding": padding, "dilation": dilation, "groups": groups}
    op = Op("conv", None, static, {name: (kshape, (c // groups * math.prod(ks)) ** -0.5)})
    x, k = jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(kshape, jnp.float32)
    try:
        op.out = tuple(jax.eval_shape(lambda x, k: _apply(op, x, {name: k}, {}), x, k).shape)
    except (TypeError, ValueError):
        return None
    return op if 0 not in op.out else None


def _d_pool(draw, shape, name):
    if len(shape) < 3:
        return None
    window = tuple(1 if d < len(shape) - 2 else draw(st.integers(1, min(2, shape[d]))) for d in range(len(shape)))
    out = tuple(n - w + 1 for n, w in zip(shape, window, strict=True))
    return Op("pool", out, {"window": window})


def _d_scan(draw, shape, name):
    return Op("scan", shape, {}, {name: (shape[1:], 0.5)})


def _d_cond(draw, shape, name):
    return Op("cond", shape, {}, {name: (shape, 0.5)}, {name + "_flag": ("int", draw(st.integers(0, 1)))})


def _d_intmul(draw, shape, name):
    return Op("intmul", shape, {}, args={name: ("ints", shape)})


_DRAW = {
    "bias": _d_bias, "bcast": _d_bcast, "act": _d_act, "dense": _d_dense, "bdot": _d_bdot, "reshape": _d_reshape,
    "transpose": _d_transpose, "squeeze": _d_squeeze, "slice": _d_slice, "dslice": _d_dslice, "dus": _d_dus,
    "pad": _d_pad, "concat": _d_concat, "stack": _d_stack, "gather": _d_gather, "scatter": _d_scatter,
    "reduce": _d_reduce, "cumsum": _d_cumsum, "flip": _d_flip, "conv": _d_conv, "pool": _d_pool, "scan": _d_scan,
    "cond": _d_cond, "intmul": _d_intmul,
}  # fmt: skip


_KINDS = tuple(sorted(_DRAW))


@st.composite
def _models(draw, kinds=_KINDS, max_ops=7):
    counter = iter(range(1000))
    start = draw(st.sampled_from(["x", "param", "emb", "image"]))
    if start == "emb":  # an embedding table indexed by integer ids (with repeats)
        v, d = draw(st.integers(2, 5)), draw(st.integers(1, 4))
        ids = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        first = Op("emb", ids + (d,), {}, {"emb": ((v, d), 1.0)}, {"emb_ids": ("ids", ids, v)})
    else:
        if start == "image":  # a batch of images (or sequences), so that convolutions and pooling apply
            shape = tuple(draw(st.integers(lo, hi)) for lo, hi in [(1, 2), (1, 3), (2, 4), (2, 4)][: draw(st.integers(3, 4))])
            start = draw(st.sampled_from(["x", "param"]))
        else:
            shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
        first = Op(
            "start",
            shape,
            {"from": start},
            {"h0": (shape, 1.0)} if start == "param" else {},
            {"x": ("x", shape)} if start == "x" else {},
        )
    ops, shape = [first], first.out
    want = draw(st.integers(2, max_ops))
    for _ in range(3 * want):
        if len(ops) > want:
            break
        kind = draw(st.sampled_from(kinds))
        op = _DRAW[kind](draw, shape, f"p{next(counter)}")
        if op is None:
            continue
        if op.out is None:  # a permutation
            op.out = tuple(shape[p] for p in op.static["perm"])
        if not 1 <= math.prod(op.out) <= _MAX_SIZE or len(op.out) > 4 or not op.out:
            continue
        op.jit = draw(st.integers(0, 5)) == 0
        ops.append(op)
        shape = op.out
    if not any(op.params for op in ops):  # at least one leaf
        ops.append(Op("bias", shape, {"mul": False}, {"last": (shape, 0.5)}))
    return Model(ops)


# ---------------------------------------------------------------- evaluating a model


def _apply(op, h, P, A):
    s, k = op.static, op.kind
    (p, pshape), *_ = [(P[n], shape) for n, (shape, _) in op.params.items()] or [(None, None)]
    if k == "emb":
        return P["emb"][A["emb_ids"]]
    if k == "start":
        return A["x"] if s["from"] == "x" else P["h0"]
    if k == "bias":
        return h * (1 + p) if s["mul"] else h + p
    if k == "bcast":
        return h + lax.broadcast_in_dim(p, h.shape, s["dims"])
    if k == "act":
        return _ACTS[s["fn"]](h)
    if k == "dense":
        if s["matmul"]:
            return h @ p if s["side"] == "right" else p @ h
        letters = "abcd"[: h.ndim]
        a = letters[s["axis"]]
        out = letters.replace(a, "z")
        spec = f"{letters},{a}z->{out}" if s["side"] == "right" else f"z{a},{letters}->{out}"
        return jnp.einsum(spec, h, p) if s["side"] == "right" else jnp.einsum(spec, p, h)
    if k == "bdot":
        a, b = s["a"], s["b"]
        if s["side"] == "right":
            return lax.dot_general(h, p, (((a,), (1,)), ((b,), (0,))))
        return lax.dot_general(p, h, (((2,), (a,)), ((0,), (b,))))
    if k == "reshape":
        return h.reshape(op.out)
    if k == "transpose":
        return jnp.transpose(h, s["perm"])
    if k == "squeeze":
        return jnp.squeeze(h, s["axis"])
    if k == "expand":
        return jnp.expand_dims(h, s["axis"])
    if k == "slice":
        return lax.slice_in_dim(h, s["start"], s["stop"], s["step"], s["axis"])
    if k == "dslice":
        (name,) = op.args
        return lax.dynamic_slice_in_dim(h, A[name], s["size"], s["axis"])
    if k == "dus":
        upd = jnp.tanh(p)
        if s["from_h"]:
            upd = upd * lax.slice_in_dim(h, 0, s["u"], axis=s["axis"])
        return lax.dynamic_update_slice_in_dim(h, upd, A[s["start"]], s["axis"])
    if k == "pad":
        cfg = [(0, 0, 0)] * h.ndim
        cfg[s["axis"]] = s["cfg"]
        return lax.pad(h, jnp.asarray(0.25, h.dtype), cfg)
    if k == "concat":
        other = jnp.tanh(p) if s["other"] == "param" else jnp.sin(h)
        return jnp.concatenate([h, other] if s["first"] else [other, h], s["axis"])
    if k == "stack":
        other = p if s["other"] == "param" else jnp.cos(h)
        return jnp.stack([h, other], s["axis"])
    if k == "gather":
        (name,) = op.args
        return jnp.take(h, A[name], axis=s["axis"])
    if k == "scatter":
        (name,) = op.args
        if s["how"] == "add_rows":
            return h.at[A[name]].add(jnp.tanh(p))
        return jnp.zeros((s["m"],) + h.shape[1:], h.dtype).at[A[name]].add(h)
    if k == "reduce":
        fn = {"sum": jnp.sum, "max": jnp.max, "min": jnp.min, "mean": jnp.mean}[s["fn"]]
        return fn(h, axis=s["axes"], keepdims=s["keep"])
    if k == "cumsum":
        return jnp.cumsum(h, s["axis"]) * 0.5
    if k == "flip":
        return jnp.flip(h, s["axis"])
    if k == "conv":
        return lax.conv_general_dilated(
            h,
            p,
            s["strides"],
            s["padding"],
            rhs_dilation=s["dilation"],
            dimension_numbers=s["dn"],
            feature_group_count=s["groups"],
        )
    if k == "pool":
        return lax.reduce_window(h, -jnp.inf, lax.max, s["window"], (1,) * h.ndim, "VALID")
    if k == "scan":

        def step(c, x):
            c = jnp.tanh(c * p + x)
            return c, 0.5 * c

        return lax.scan(step, jnp.zeros(h.shape[1:], h.dtype), h)[1]
    if k == "cond":
        (name,) = op.args
        return lax.cond(A[name] > 0, lambda h: jnp.tanh(h * p), lambda h: jnp.sin(h) + p, h)
    if k == "intmul":
        (name,) = op.args
        return h * A[name]
    raise AssertionError(k)


def _build(model, dtype, seed):
    rng = np.random.default_rng(seed)
    params, args = {}, {}
    for op in model.ops:
        for name, (shape, scale) in op.params.items():
            params[name] = jnp.asarray(scale * rng.normal(size=shape), dtype)
        for name, spec in op.args.items():
            if spec[0] == "x":
                args[name] = jnp.asarray(rng.normal(size=spec[1]), dtype)
            elif spec[0] == "ids":
                ids = rng.integers(0, spec[2], size=spec[1])
                ids.flat[-1] = ids.flat[0]  # a repeated id
                args[name] = jnp.asarray(ids, jnp.int32)
            elif spec[0] == "int":
                args[name] = jnp.asarray(spec[1], jnp.int32)
            else:
                args[name] = jnp.asarray(rng.integers(-2, 3, size=spec[1]), jnp.int32)

    def loss(P, A):
        h = None
        for op in model.ops:
            f = functools.partial(_apply, op)
            h = jax.jit(f)(h, P, A) if op.jit else f(h, P, A)
        return jnp.mean(jnp.tanh(h) ** 2) + 0.3 * jnp.mean(jnp.sin(h))

    return loss, params, (args,)


def assert_same(loss, params, args, path, tag=None, plain=None):
    """Forced down `path`, numeric_grad equals the plain engine within the rounding bound."""
    dtype = jgc._tree.layout(params).dtype
    eps = jgc._stencils.nominal_eps(dtype, "central")  # given explicitly: both paths use the same steps
    if plain is None:
        plain = jgc.numeric_grad(loss, params, *args, eps=eps, partial_eval=False)
    with pytest.MonkeyPatch.context() as mp:  # FORCE is read when a check plans its leaves' paths
        mp.setattr(_cost, "FORCE", path)
        lay = jgc._tree.layout(params)
        assert set(_partial.plan(loss, lay, params, args, jgc._stencils.get("central"))) <= {path, ""}
        part = jgc.numeric_grad(loss, params, *args, eps=eps, partial_eval=True)
    bound = _ROUNDING * float(jnp.finfo(dtype).eps) * max(1.0, abs(float(loss(params, *args)))) / eps
    worst = 0.0
    for key, a, b in zip(sorted(params), *(jax.tree_util.tree_leaves(t) for t in (plain, part)), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isfinite(b), np.isfinite(a), err_msg=key)
        fin = np.isfinite(a)
        err = np.abs(a[fin] - b[fin])
        np.testing.assert_array_less(err, bound * (1 + 1e-12), err_msg=f"{path}: leaf {key}")
        worst = max(worst, float(err.max(initial=0)) / bound)
    tag = tag or f"{path} {jnp.dtype(dtype).name}"
    _WORST[tag] = max(_WORST.get(tag, 0.0), worst)
    return plain, part


# ---------------------------------------------------------------- tests


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(model=_models(), x64=st.booleans(), seed=st.integers(0, 2**16))
def test_random_models(model, x64, seed):
    with jax.enable_x64(x64):
        loss, params, args = _build(model, jnp.float64 if x64 else jnp.float32, seed)
        eps = jgc._stencils.nominal_eps(jgc._tree.layout(params).dtype, "central")
        plain = jgc.numeric_grad(loss, params, *args, eps=eps, partial_eval=False)
        for path in (_partial.PARTIAL, _partial.SPARSE):
            assert_same(loss, params, args, path, plain=plain)


_BROADCASTS = ("bias", "bcast", "act", "dense", "bdot", "reshape", "transpose", "squeeze", "reduce")


@settings(max_examples=_EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(model=_models(kinds=_BROADCASTS, max_ops=5), x64=st.booleans(), seed=st.integers(0, 2**16))
def test_random_broadcast_models(model, x64, seed):
    """The class of the column-vector bias bug: broadcasts, products and reshapes only."""
    with jax.enable_x64(x64):
        loss, params, args = _build(model, jnp.float64 if x64 else jnp.float32, seed)
        assert_same(loss, params, args, _partial.SPARSE, tag=f"broadcast sparse {'float64' if x64 else 'float32'}")


def _course(dtype, sizes, m=16, seed=0):
    """The course network: W[l] of shape (n_l, n_{l-1}), column-vector biases b[l] of shape (n_l, 1),
    examples in columns (X of shape (n_0, m)), tanh hidden layers, a sigmoid output and cross-entropy."""
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(1, len(sizes)):
        params[f"W{i}"] = jnp.asarray(rng.normal(size=(sizes[i], sizes[i - 1])) / np.sqrt(sizes[i - 1]), dtype)
        params[f"b{i}"] = jnp.asarray(0.1 * rng.normal(size=(sizes[i], 1)), dtype)
    X = jnp.asarray(rng.normal(size=(sizes[0], m)), dtype)
    Y = jnp.asarray(rng.random(size=(1, m)) > 0.5, dtype)
    L = len(sizes) - 1

    def loss(p, X, Y):
        A = X
        for i in range(1, L):
            A = jnp.tanh(p[f"W{i}"] @ A + p[f"b{i}"])
        AL = jax.nn.sigmoid(p[f"W{L}"] @ A + p[f"b{L}"])
        return -jnp.mean(Y * jnp.log(AL) + (1 - Y) * jnp.log(1 - AL))

    return loss, params, (X, Y)


@pytest.mark.parametrize("path", [None, _partial.PARTIAL, _partial.SPARSE])
def test_course_network_column_biases(dtype, path):
    """Regression: b1 of shape (k, 1), broadcast over the examples, was wrong on the sparse path."""
    loss, params, args = _course(dtype, (6, 5, 4, 1))
    expected = jax.grad(loss)(params, *args)
    if path is None:
        with pytest.MonkeyPatch.context() as mp:  # a small model: only the compile cost keeps it plain
            mp.setattr(_cost, "MIN_FLOPS_SAVED", 0)
            res = jgc.check_grad(loss, None, params, *args, partial_eval=True)
        assert bool(res.passed), res.report()
        assert "sparse" in res.leaf_eval
        got = jgc.numeric_grad(loss, params, *args, partial_eval=True)
    else:
        _, got = assert_same(loss, params, args, path, tag=f"course {path} {jnp.dtype(dtype).name}")
    tol = 1e-2 if dtype == jnp.float32 else 1e-7
    for key in params:
        np.testing.assert_allclose(got[key], expected[key], rtol=tol, atol=tol, err_msg=key)
