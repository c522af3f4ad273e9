"""Partial evaluation per leaf (jgc/_partial/) gives the plain engine's numbers.

Tolerance. Both paths evaluate the same stencil points θ ± h_j e_j with the same steps;
they differ only in how XLA orders the arithmetic of the loss (a smaller program, other
fusions, batched versus unbatched matrix products). Each loss value then carries its
own rounding error of a few ε·S (ε the machine epsilon, S the size of the loss and of
the terms summed into it), and a stencil divides it by h_j ≥ eps, so the two numeric
gradients may differ by about ε·S/eps per coordinate: ~1e-10·S in float64 (eps 1e-6),
~1e-5·S in float32 (eps 1e-2). Tests allow `_ROUNDING`·ε·S/eps with S = max(1, Σ|J
terms|) estimated as max(1, |J(θ)|) times a small factor for the models below; the
worst ratio we saw on these models is printed in docs/partial_eval.md.
"""

import os
import re

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from corpus import FLOAT64_ONLY
from corpus import MODELS as CORPUS
from hypothesis import given, settings
from hypothesis import strategies as st
from test_corpus import QUICK as CORPUS_QUICK

import jgc
from jgc import _partial
from jgc._partial import _cost

_ROUNDING = 16  # multiples of ε·max(1, |J|)/eps allowed between the two paths


@pytest.fixture(params=["partial", "sparse"])
def forced(request, monkeypatch):
    """Send every leaf down one path (downstream-only, or sparse change propagation).

    `FORCE` is read when a check plans its leaves' paths (every call, on the host); each path
    compiles its own programs, so nothing cached has to be cleared.
    """
    monkeypatch.setattr(_cost, "FORCE", request.param)
    yield request.param


def _assert_same(loss, params, *args, method="central", eps=None):
    """numeric_grad with partial_eval on equals the plain engine's up to rounding."""
    dtype = jgc._tree.layout(params).dtype
    if eps is None:  # the nominal step, given explicitly: both paths use the same steps
        eps = jgc._stencils.nominal_eps(dtype, method)
    plain = jgc.numeric_grad(loss, params, *args, method=method, eps=eps, partial_eval=False)
    part = jgc.numeric_grad(loss, params, *args, method=method, eps=eps, partial_eval=True)
    scale = max(1.0, abs(float(loss(params, *args))))
    atol = _ROUNDING * float(jnp.finfo(dtype).eps) * scale / eps
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(part), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(np.isfinite(a) == np.isfinite(b))
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)
    return plain, part


def _normal(key, shape, dtype, scale=1.0):
    return (scale * jax.random.normal(key, shape)).astype(dtype)


# ---------------------------------------------------------------- models


def _mlp(dtype, sizes=(6, 5, 4, 1), batch=7):
    ks = jax.random.split(jax.random.PRNGKey(0), 2 * len(sizes))
    params = [
        {"W": _normal(ks[2 * i], (a, b), dtype, a**-0.5), "b": _normal(ks[2 * i + 1], (b,), dtype, 0.1)}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    x, y = _normal(ks[-1], (batch, sizes[0]), dtype), _normal(ks[-2], (batch,), dtype)

    def loss(p, x, y):
        h = x
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["W"] + layer["b"][None])
        out = (h @ p[-1]["W"] + p[-1]["b"][None])[:, 0]
        return jnp.mean((out - y) ** 2)

    return loss, params, (x, y)


def _cnn(dtype):
    ks = jax.random.split(jax.random.PRNGKey(1), 5)
    params = {
        "conv": _normal(ks[0], (3, 2, 3, 3), dtype, 0.3),  # OIHW
        "bias": _normal(ks[1], (3,), dtype, 0.1),
        "dense": _normal(ks[2], (3 * 4 * 4, 2), dtype, 0.2),
    }
    x = _normal(ks[3], (2, 2, 6, 6), dtype)  # NCHW

    def loss(p, x):
        h = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "VALID")
        h = jax.nn.relu(h + p["bias"][None, :, None, None])
        return jnp.sum(jnp.tanh(h.reshape(2, -1) @ p["dense"]) ** 2)

    return loss, params, (x,)


def _rnn(dtype):
    ks = jax.random.split(jax.random.PRNGKey(2), 5)
    params = {"Wx": _normal(ks[0], (3, 4), dtype, 0.5), "Wh": _normal(ks[1], (4, 4), dtype, 0.5)}
    params["out"] = _normal(ks[2], (4,), dtype)
    xs = _normal(ks[3], (5, 2, 3), dtype)  # time, batch, features

    def loss(p, xs):
        def step(h, x):
            h = jnp.tanh(x @ p["Wx"] + h @ p["Wh"])
            return h, jnp.sum(h * p["out"][None])

        _, outs = jax.lax.scan(step, jnp.zeros((2, 4), dtype), xs)
        return jnp.sum(outs**2)

    return loss, params, (xs,)


def _layernorm(dtype):
    ks = jax.random.split(jax.random.PRNGKey(3), 4)
    params = {"W": _normal(ks[0], (5, 6), dtype, 0.5)}
    params["gamma"], params["beta"] = 1 + _normal(ks[1], (6,), dtype, 0.1), _normal(ks[2], (6,), dtype, 0.1)
    x = _normal(ks[3], (4, 5), dtype)

    def loss(p, x):
        h = x @ p["W"]
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        h = (h - mu) * jax.lax.rsqrt(var + 1e-5) * p["gamma"][None] + p["beta"][None]
        return jnp.sum(jnp.sin(h))

    return loss, params, (x,)


def _attention(dtype):
    ks = jax.random.split(jax.random.PRNGKey(4), 5)
    d = 4
    params = {k: _normal(kk, (d, d), dtype, 0.5) for k, kk in zip(("q", "k", "v", "o"), ks[:4], strict=True)}
    x = _normal(ks[4], (5, d), dtype)

    def loss(p, x):
        q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
        a = jax.nn.softmax(q @ k.T / jnp.sqrt(jnp.asarray(d, dtype)), axis=-1)
        return jnp.sum(jnp.tanh(a @ v @ p["o"]))

    return loss, params, (x,)


def _embedding(dtype):
    ks = jax.random.split(jax.random.PRNGKey(5), 3)
    params = {"emb": _normal(ks[0], (7, 3), dtype), "W": _normal(ks[1], (3, 2), dtype)}
    idx = jnp.array([[0, 3, 3], [6, 1, 0]], jnp.int32)  # integer indices in args

    def loss(p, idx):
        return jnp.sum(jnp.tanh(p["emb"][idx] @ p["W"]) ** 2)

    return loss, params, (idx,)


MODELS = {"mlp": _mlp, "cnn": _cnn, "rnn_scan": _rnn, "layernorm": _layernorm, "attention": _attention, "embedding": _embedding}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_models_same_numbers(model, dtype, forced):
    loss, params, args = MODELS[model](dtype)
    lay = jgc._tree.layout(params)
    assert _partial.plan(loss, lay, params, args, jgc._stencils.get("central")) == (forced,) * len(lay.paths)
    _assert_same(loss, params, *args)


@pytest.mark.parametrize("method", ["forward", "five_point"])
def test_other_stencils(method, dtype, forced):
    loss, params, args = _mlp(dtype)
    _assert_same(loss, params, *args, method=method)


def test_explicit_eps_and_chunk(forced):
    loss, params, args = _cnn(jnp.float32)
    a = jgc.numeric_grad(loss, params, *args, eps=3e-2, chunk_size=5)
    b = jgc.numeric_grad(loss, params, *args, eps=3e-2, chunk_size=5, partial_eval=True)
    c = jgc.numeric_grad(loss, params, *args, eps=3e-2, partial_eval=True)
    scale = 64 * float(jnp.finfo(jnp.float32).eps) * abs(float(loss(params, *args))) / 3e-2
    for x, y, z in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), jax.tree_util.tree_leaves(c), strict=True):
        np.testing.assert_allclose(y, x, rtol=0, atol=scale)
        np.testing.assert_allclose(z, x, rtol=0, atol=scale)


def test_mixed_dtypes_and_unchecked_leaves(forced):
    with jax.enable_x64(True):
        ks = jax.random.split(jax.random.PRNGKey(6), 2)
        params = {"a": _normal(ks[0], (3, 2), jnp.float32), "b": _normal(ks[1], (2,), jnp.float64), "n": jnp.arange(3)}

        def loss(p):
            return jnp.sum(jnp.tanh(p["a"].astype(jnp.float64) @ p["b"] + p["n"])) ** 2

        res = jgc.check_grad(loss, None, params, partial_eval=True)
        assert res.leaf_eval == (forced, forced, "")
        assert bool(res.passed), res.report()
        # θ is float64; the float32 leaf's steps are float32-exact, so rounding is at float32 level there
        plain = jgc.numeric_grad(loss, params, eps=1e-6, partial_eval=False)
        part = jgc.numeric_grad(loss, params, eps=1e-6, partial_eval=True)
        np.testing.assert_allclose(part["a"], plain["a"], rtol=0, atol=64 * 2**-23 * float(loss(params)) / 1e-6)
        np.testing.assert_allclose(part["b"], plain["b"], rtol=0, atol=64 * 2**-52 * float(loss(params)) / 1e-6)
        assert np.isnan(part["n"]).all()


def test_unused_leaf_and_nested_jit(forced, dtype):
    ks = jax.random.split(jax.random.PRNGKey(7), 2)
    params = {"used": _normal(ks[0], (3,), dtype), "unused": _normal(ks[1], (2,), dtype)}
    inner = jax.jit(lambda w: jnp.sum(jnp.sin(w) * jnp.arange(3, dtype=dtype)))

    def loss(p):
        return inner(p["used"]) + jnp.cos(jnp.sum(p["used"]))

    plain, part = _assert_same(loss, params)
    assert np.all(np.asarray(part["unused"]) == 0)


# ---------------------------------------------------------------- which path, fallbacks


def test_default_and_plan(monkeypatch):
    loss, params, args = _mlp(jnp.float32)
    res = jgc.check_grad(loss, None, params, *args, partial_eval=False)
    assert res.leaf_eval == ()
    assert "partial evaluation" not in res.report()
    # on by default, but this model is too small for any leaf to pay for compiling its own program
    res = jgc.check_grad(loss, None, params, *args)
    assert res.leaf_eval == ("plain: little to hoist",) * 6
    # without the compile cost, sparse propagation pays for the first two layers, the last is cheap either way
    monkeypatch.setattr(_cost, "MIN_FLOPS_SAVED", 0)
    res = jgc.check_grad(loss, None, params, *args)
    assert res.leaf_eval == ("sparse", "sparse", "sparse", "sparse", "partial", "partial")
    assert "partial evaluation: 2 leaves downstream only, 4 sparse, of 6" in res.report()
    _assert_same(loss, params, *args)


def test_conv_takes_the_sparse_path(dtype, monkeypatch):
    # conv_general_dilated has sparse rules: a kernel entry recomputes one output feature
    monkeypatch.setattr(_cost, "MIN_FLOPS_SAVED", 0)  # a small model: only the compile cost keeps it plain
    loss, params, args = _cnn(dtype)
    res = jgc.check_grad(loss, None, params, *args, partial_eval=True)
    assert res.leaf_eval == ("sparse", "sparse", "sparse")  # bias, conv, dense
    assert bool(res.passed), res.report()
    _assert_same(loss, params, *args)


def test_unhandled_primitive_takes_the_plain_engine(dtype):
    # a while loop has no sparse rule; the leaf read by it first reaches all of the loss
    ks = jax.random.split(jax.random.PRNGKey(8), 3)
    params = {"w": _normal(ks[0], (5,), dtype), "v": _normal(ks[1], (5,), dtype)}
    x = _normal(ks[2], (5,), dtype)

    def loss(p, x):
        h = jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h * p["w"] + x), x)
        return jnp.sum(h * p["v"])

    res = jgc.check_grad(loss, None, params, x, partial_eval=True)
    assert res.leaf_eval == ("plain: little to hoist",) * 2  # v is cheap either way; w reaches everything
    assert "partial evaluation" not in res.report()  # nothing to say when every leaf simply takes the plain engine
    assert bool(res.passed), res.report()
    _assert_same(loss, params, x)


def test_side_effects_take_the_plain_engine_bitwise(dtype):
    loss0, params, args = _mlp(dtype)

    def loss(p, x, y):
        jax.debug.callback(lambda *a: None, x)
        return loss0(p, x, y)

    res = jgc.check_grad(loss, None, params, *args, partial_eval=True)
    assert set(res.leaf_eval) == {"plain: side effects"}
    assert "plain engine (side effects)" in res.report()
    plain = jgc.numeric_grad(loss, params, *args, partial_eval=False)
    part = jgc.numeric_grad(loss, params, *args, partial_eval=True)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(part), strict=True):
        np.testing.assert_array_equal(b, a)


def test_single_leaf_nothing_to_hoist_is_plain_bitwise(dtype):
    w = jnp.linspace(-1, 1, 5, dtype=dtype)
    loss = lambda w: jnp.sum(jnp.cumsum(jnp.tanh(w)) ** 2)  # cumsum mixes its one axis: nothing to save
    res = jgc.check_grad(loss, None, w, partial_eval=True)
    assert res.leaf_eval == ("plain: little to hoist",)
    np.testing.assert_array_equal(jgc.numeric_grad(loss, w, partial_eval=True), jgc.numeric_grad(loss, w, partial_eval=False))


def test_complex_step_stencil_takes_the_plain_engine():
    # a stencil whose offsets are not real (issue 4's complex step) is never split
    loss, params, args = _mlp(jnp.float32)
    stencil = jgc._stencils.Stencil("complex_step", (1j,), (1.0,), 0.0, 2, complex=True)
    assert _partial.plan(loss, jgc._tree.layout(params), params, args, stencil) == ("plain: stencil",) * 6


def test_bad_option():
    loss, params, args = _mlp(jnp.float32)
    with pytest.raises(TypeError, match=re.escape("partial_eval must be True or False; received str: 'yes'.")):
        jgc.check_grad(loss, None, params, *args, partial_eval="yes")
    with pytest.raises(TypeError, match=re.escape("partial_eval must be True or False; received int: 1.")):
        jgc.numeric_grad(loss, params, *args, partial_eval=1)


# ---------------------------------------------------------------- planted bug, jit, vmap


def test_planted_bug_under_transforms(transform, dtype, forced):
    loss, params, args = _mlp(dtype)

    def bad_grad(p, x, y):
        g = jax.grad(loss)(p, x, y)
        g[1]["b"] = g[1]["b"] * 1.5  # planted: wrong bias gradient in the second layer
        return g

    batch = jax.tree_util.tree_map(lambda v: jnp.stack([v, 0.9 * v]), params)
    bad = transform(lambda p: jgc.check_grad(loss, bad_grad, p, *args, partial_eval=True), batch)
    assert not np.any(bad.passed)
    # on the host the forced path; inside the caller's jit/vmap one program, the whole loss per probe
    assert bad.leaf_eval == ((forced,) if transform.name == "plain" else (_partial.PLAIN_TRACED,)) * 6
    leaf_ok = [np.asarray(v) for v in jax.tree_util.tree_leaves(bad.leaf_passed)]
    assert [bool(np.all(v)) for v in leaf_ok] == [True, True, True, False, True, True]
    assert [row.split()[1] for row in bad.report().splitlines() if row.startswith("✗")] == ["[1]['b']"]
    plain = transform(lambda p: jgc.check_grad(loss, None, p, *args, partial_eval=False), batch)
    eps = jgc._stencils.nominal_eps(dtype, "central")
    atol = _ROUNDING * float(jnp.finfo(dtype).eps) * max(1.0, abs(float(loss(params, *args)))) / eps
    for a, b in zip(jax.tree_util.tree_leaves(plain.numeric), jax.tree_util.tree_leaves(bad.numeric), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)


def test_data_traced_inside_the_users_jit(forced):
    loss, params, (x, y) = _mlp(jnp.float32)

    @jax.jit
    def run(p, x, y):  # the loss closes over traced data
        return jgc.numeric_grad(lambda q: loss(q, x, y), p, partial_eval=True)

    part = run(params, x, y)
    plain = jgc.numeric_grad(loss, params, x, y, partial_eval=False)
    atol = _ROUNDING * 2**-23 * max(1.0, float(loss(params, x, y))) / 1e-2
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(part), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)


# ---------------------------------------------------------------- random pytrees


@st.composite
def _trees(draw):
    n = draw(st.integers(1, 4))
    shapes = [draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)) for _ in range(n)]
    seeds = draw(st.lists(st.integers(0, 2**16), min_size=n, max_size=n))
    nested = draw(st.booleans())
    return shapes, seeds, nested


@settings(max_examples=int(os.environ.get("JGC_RANDOM_EXAMPLES", 4)), deadline=None)
@given(tree=_trees(), x64=st.booleans(), path=st.sampled_from(["partial", "sparse"]))
def test_random_pytrees(tree, x64, path):
    shapes, seeds, nested = tree
    with jax.enable_x64(x64), pytest.MonkeyPatch.context() as mp:
        mp.setattr(_cost, "FORCE", path)
        dtype = jnp.float64 if x64 else jnp.float32
        leaves = [_normal(jax.random.PRNGKey(s), shape, dtype, 0.7) for s, shape in zip(seeds, shapes, strict=True)]
        params = {"a": leaves[0], "rest": [{"w": v} for v in leaves[1:]]} if nested else leaves

        def loss(p):
            v = jnp.asarray(0.3, dtype)
            for i, leaf in enumerate(jax.tree_util.tree_leaves(p)):  # a chain: later leaves are nearer the output
                v = jnp.tanh(v * (1 + 0.1 * i) + jnp.sum(jnp.sin(leaf) * (leaf + v)))
            return v**2 + 0.5 * v

        _assert_same(loss, params)


# not the losses that compute in float32 inside: their rounding is float32's, beyond the float64 tolerance below
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(m, id=m.name, marks=[] if m.name in CORPUS_QUICK | {"dropout_mlp"} else [pytest.mark.slow])
        for m in CORPUS
        if m.name not in FLOAT64_ONLY
    ],
)
def test_bug_corpus_same_numbers(model, forced):
    """Partial evaluation (each path forced) equals the plain engine on the bug corpus (float64;
    the default run takes the quick models, the slow tier all).

    Both paths evaluate the loss at the same points in another order of arithmetic: each
    value carries a few ulp·|J|, divided by the step h ≥ eps.
    """
    with jax.enable_x64(True):
        params, args = model.init(jax.random.PRNGKey(3), jnp.float64)
        plain = jgc.numeric_grad(model.loss_fn, params, *args, partial_eval=False)
        fast = jgc.numeric_grad(model.loss_fn, params, *args, partial_eval=True)
        scale = max(1.0, abs(float(model.loss_fn(params, *args))))
        atol = 16 * float(jnp.finfo(jnp.float64).eps) * scale / 1e-6
        for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(fast)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=atol)


def test_new_data_with_the_same_loss_is_not_served_stale(forced):
    # the per-leaf programs are cached per loss and layout; the args' values (new data, same
    # shapes) flow into them, and a loss traced to another jaxpr gets programs of its own
    def loss(p, x, scale):
        return scale * jnp.sum(jnp.tanh(x @ p["W"] + p["b"][None]) ** 2)

    with jax.enable_x64(True):
        p = {"W": jnp.full((3, 2), 0.3), "b": jnp.full(2, 0.1)}
        for seed, rows, scale in [(0, 4, 1.0), (1, 4, 1.0), (2, 5, 1.0), (2, 5, 2.0)]:
            x = jax.random.normal(jax.random.key(seed), (rows, 3))
            num = jgc.numeric_grad(loss, p, x, scale, partial_eval=True)
            exact = jax.grad(loss)(p, x, scale)
            for a, b in zip(jax.tree_util.tree_leaves(num), jax.tree_util.tree_leaves(exact)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7, atol=1e-8)
