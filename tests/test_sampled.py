"""check_grad(..., coords=k, key=...): stratified random coordinates."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import evals
from hypothesis import given
from hypothesis import strategies as st

import jgc
from jgc._probes import allocate


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"] + p["b"][None]) ** 2)


def grad(p, x, scale_b=1.0):
    t = jnp.tanh(x @ p["W"] + p["b"][None])
    d = 2 * t * (1 - t**2)
    return {"W": x.T @ d, "b": scale_b * d.sum(0)}


def batch(dtype):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"W": 0.5 * jax.random.normal(k1, (2, 6, 5), dtype), "b": 0.1 * jax.random.normal(k2, (2, 5), dtype)}
    return params, jax.random.normal(k3, (7, 6), dtype)


KEY = jax.random.key(7)


def test_correct_passes(dtype, transform):
    params, x = batch(dtype)
    res = transform(lambda p: jgc.check_grad(loss, grad, p, x, coords=8, key=KEY), params)
    assert isinstance(res, jgc.SampledCheck) and res.sampled == 8
    assert res.passed.all()
    assert (res.num_evals == evals(res)).all()  # 8 sampled coordinates × 2, the noise probe, J(θ) twice
    # 4 coordinates of each leaf are sampled; the rest are NaN in numeric and analytic.
    for leaf in ("W", "b"):
        num, ana = np.asarray(res.numeric[leaf]), np.asarray(res.analytic[leaf])
        assert (np.isnan(num) == np.isnan(ana)).all()
        assert (~np.isnan(num)).reshape(num.shape[0], -1).sum(1).tolist() == [4] * num.shape[0]


def test_wrong_leaf_fails_and_is_named(dtype, transform):
    params, x = batch(dtype)
    res = transform(lambda p: jgc.check_grad(loss, lambda p, x: grad(p, x, scale_b=1.5), p, x, coords=8, key=KEY), params)
    assert not res.passed.any()
    assert res.leaf_failed["b"].all() and not res.leaf_failed["W"].any()
    assert res.leaf_passed["W"].all()  # float32 on the host: resolved (adapted steps, float64) to tol 1e-4
    np.testing.assert_allclose(np.asarray(res.leaf_rel_error["b"]), 0.2, rtol=1e-2)


def test_sampled_values_match_the_full_check():
    with jax.enable_x64(True):
        params, x = batch(jnp.float64)
        p = jax.tree.map(lambda a: a[0], params)
        full = jgc.check_grad(loss, grad, p, x)
        res = jgc.check_grad(loss, grad, p, x, coords=10, key=KEY)
        for leaf in ("W", "b"):
            got, want = np.asarray(res.numeric[leaf]), np.asarray(full.numeric[leaf])
            seen = ~np.isnan(got)
            # another batch shape may round the loss by an ulp: ~ulp·|J|/eps ≈ 1e-9 in the derivative
            np.testing.assert_allclose(got[seen], want[seen], rtol=1e-12, atol=1e-8)
        every = jgc.check_grad(loss, grad, p, x, coords=1000, key=KEY)  # more than n: every coordinate
        assert every.sampled == 35
        np.testing.assert_allclose(
            float(every.rel_error), float(full.rel_error), rtol=1e-10, atol=1e-9
        )  # both are rounding noise here


def test_report_and_worst():
    params, x = batch(jnp.float32)
    p = jax.tree.map(lambda a: a[0], params)
    res = jgc.check_grad(loss, lambda p, x: grad(p, x, scale_b=2.0), p, x, coords=6, key=KEY)
    text = res.report()
    assert f"6 of 35 coordinates sampled, {int(res.num_evals)} loss evaluations" in text and int(res.num_evals) == evals(res)
    assert "3 of 30 sampled" in text  # W's row
    assert re.search(r"^✗ \['b'\]", text, re.M)
    worst = res.worst(10)
    assert len(worst) == 6 and worst[0].path == "['b']"
    assert all(np.isfinite(c.numeric) for c in worst)


def test_bad_input():
    params, x = batch(jnp.float32)
    p = jax.tree.map(lambda a: a[0], params)
    with pytest.raises(ValueError, match=re.escape("a sampled check needs both coords and key; received coords=5, key=None.")):
        jgc.check_grad(loss, grad, p, x, coords=5)
    with pytest.raises(ValueError, match=re.escape("coords must be a positive int; received 0.")):
        jgc.check_grad(loss, grad, p, x, coords=0, key=KEY)


@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.integers(1, 200))
def test_allocate(sizes, k):
    counts = allocate(tuple(sizes), k)
    assert all(1 <= c <= s for c, s in zip(counts, sizes, strict=True))
    assert sum(counts) == max(min(k, sum(sizes)), len(sizes))
    # equal shares: a leaf below its size never has fewer than a leaf with more samples minus one
    partial = [c for c, s in zip(counts, sizes, strict=True) if c < s]
    assert not partial or max(partial) - min(partial) <= 1
