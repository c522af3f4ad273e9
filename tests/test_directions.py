"""jgc.check_directions: random directions per leaf."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import evals

import jgc


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"] + p["b"][None]) ** 2)


def grad(p, x, scale_b=1.0, scale_w=1.0):
    t = jnp.tanh(x @ p["W"] + p["b"][None])
    d = 2 * t * (1 - t**2)
    return {"W": scale_w * x.T @ d, "b": scale_b * d.sum(0)}


def batch(dtype):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"W": 0.5 * jax.random.normal(k1, (2, 6, 5), dtype), "b": 0.1 * jax.random.normal(k2, (2, 5), dtype)}
    return params, jax.random.normal(k3, (7, 6), dtype)


KEY = jax.random.key(42)


def test_correct_passes(dtype, transform):
    params, x = batch(dtype)
    res = transform(lambda p: jgc.check_directions(loss, grad, p, x, key=KEY), params)
    assert isinstance(res, jgc.DirectionCheck)
    assert res.passed.tolist() == [True] * res.passed.shape[0]
    assert float(res.rel_error.max()) < 0.1 * float(res.tol[0])
    assert res.numeric["W"].shape == (res.passed.shape[0], 8)
    assert (res.num_evals == evals(res)).all()  # 2 leaves × 8 directions × 2, the noise probe, J(θ) twice


def test_small_wrong_leaf_fails_and_is_named(dtype, transform):
    params, x = batch(dtype)
    res = transform(lambda p: jgc.check_directions(loss, lambda p, x: grad(p, x, scale_b=1.5), p, x, key=KEY), params)
    assert not res.passed.any()
    assert res.leaf_failed["b"].all() and not res.leaf_failed["W"].any()
    assert res.leaf_passed["W"].all()  # float32 on the host: resolved (adapted steps, float64) to tol 1e-4
    # leaf_rel_error of b: |0.5 g| / (|1.5 g| + |g|) = 0.2 along every direction
    np.testing.assert_allclose(np.asarray(res.leaf_rel_error["b"]), 0.2, rtol=1e-2)


def test_rel_error_estimates_the_full_check():
    with jax.enable_x64(True):
        params, x = batch(jnp.float64)
        p = jax.tree.map(lambda a: a[0], params)
        wrong = lambda p, x: grad(p, x) | {"W": grad(p, x)["W"] + 0.05 * jnp.sign(p["W"])}  # noqa: E731
        full = jgc.check_grad(loss, wrong, p, x)
        est = [float(jgc.check_directions(loss, wrong, p, x, key=jax.random.key(s), num=64).rel_error) for s in range(4)]
        ratio = np.asarray(est) / float(full.rel_error)
        assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_report_and_worst():
    params, x = batch(jnp.float32)
    p = jax.tree.map(lambda a: a[0], params)
    res = jgc.check_directions(loss, lambda p, x: grad(p, x, scale_b=2.0), p, x, key=KEY, num=4)
    text = res.report()
    assert text.startswith("jgc check_directions FAILED")
    assert f"4 directions per leaf over 35 coordinates, {int(res.num_evals)} loss evaluations" in text
    assert int(res.num_evals) == evals(res)
    assert "worst dir" in text
    assert re.search(r"^✗ \['b'\]", text, re.M)
    (w,) = res.worst(1)
    assert w.path == "['b']" and w.index[0] in range(4)
    np.testing.assert_allclose(w.analytic, 2 * w.numeric, rtol=1e-2)


def test_bad_input():
    params, x = batch(jnp.float32)
    p = jax.tree.map(lambda a: a[0], params)
    with pytest.raises(TypeError, match=re.escape("key must be a PRNG key, e.g. jax.random.key(0); received int")):
        jgc.check_directions(loss, grad, p, x, key=0)
    with pytest.raises(ValueError, match=re.escape("num must be a positive int; received 0.")):
        jgc.check_directions(loss, grad, p, x, key=KEY, num=0)


def test_non_array_leaves_pass_through_every_fast_mode():
    """A string leaf (a config flag) rides along, static, in directional, sampled and locate checks."""

    def loss(p, x):
        assert p["mode"] == "train"
        return jnp.sum(jnp.sin(p["w"] * x))

    def grad(p, x):
        return {"w": x * jnp.cos(p["w"] * x), "mode": None}

    p = {"w": jnp.linspace(-1.0, 1.0, 6), "mode": "train"}
    x = jnp.linspace(0.5, 2.0, 6)
    key = jax.random.key(0)
    assert bool(jgc.check_directions(loss, grad, p, x, key=key).passed)
    assert bool(jgc.check_grad(loss, grad, p, x, coords=3, key=key).passed)
    assert jgc.locate(loss, grad, p, x, key=key).wrong == ()
