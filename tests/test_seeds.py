"""jgc.check_seeds and jgc.check_snapshots: one vmapped, compiled check over many points."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc


def loss(p, x):
    return jnp.sum(jnp.sin(x @ p["W"]) ** 2) + jnp.sum(p["b"] ** 2)


def grad(p, x):
    z = x @ p["W"]
    return {"W": x.T @ (2 * jnp.sin(z) * jnp.cos(z)), "b": 2 * p["b"]}


def buggy(p, x):
    """Wrong only where b[0] > 0: fails for some seeds, on leaf b."""
    g = grad(p, x)
    return {"W": g["W"], "b": g["b"] * jnp.where(p["b"][0] > 0, 1.5, 1.0)}


def make_init(dtype):
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W": jax.random.normal(k1, (3, 2), dtype), "b": jax.random.normal(k2, (2,), dtype)}

    return init


KEYS = jax.random.split(jax.random.key(0), 6)


def x_of(dtype):
    return jnp.linspace(-1, 1, 12, dtype=dtype).reshape(4, 3)


@pytest.mark.parametrize("wrap", ["plain", "jit"])
def test_seeds_pass_and_fail(dtype, wrap):
    init, x = make_init(dtype), x_of(dtype)
    run = lambda g: jgc.check_seeds(loss, g, init, KEYS, x)  # noqa: E731
    run = jax.jit(run, static_argnums=0) if wrap == "jit" else run
    ok = run(grad)
    assert ok.passed.shape == (6,) and ok.passed.all()
    bad = run(buggy)
    expected = np.asarray([init(k)["b"][0] > 0 for k in KEYS])
    assert 0 < expected.sum() < 6
    np.testing.assert_array_equal(~np.asarray(bad.passed), expected)
    np.testing.assert_array_equal(~np.asarray(bad.leaf_passed["b"]), expected)
    assert np.asarray(bad.leaf_passed["W"]).all()
    text = bad.report()
    failed = ", ".join(map(str, np.flatnonzero(expected)))
    assert f"jgc batched check over 6 seeds (batch shape (6,)): {expected.sum()} FAILED (seeds {failed})" in text
    worst = int(np.argmax(np.where(expected, np.asarray(bad.rel_error), -1)))
    assert f"worst seed {worst}:" in text


def test_snapshots_match_single_checks(dtype):
    init, x = make_init(dtype), x_of(dtype)
    snaps = [init(k) for k in KEYS[:3]]
    stacked = jax.tree.map(lambda *s: jnp.stack(s), *snaps)
    res = jgc.check_snapshots(loss, buggy, stacked, x)
    for i, p in enumerate(snaps):
        one = jgc.check_grad(loss, buggy, p, x)
        assert bool(res.passed[i]) == bool(one.passed)
        # batched and single losses may round differently (other reduction order); finite
        # differences turn a few ulps of the loss into a few ulp·|J|/eps of the derivative
        ulps = 32 * float(jnp.finfo(dtype).eps) * abs(float(loss(p, x))) / float(one.eps)
        np.testing.assert_allclose(np.asarray(res.numeric["W"][i]), np.asarray(one.numeric["W"]), rtol=1e-8, atol=ulps)


def test_seeds_with_other_checks():
    init, x = make_init(jnp.float32), x_of(jnp.float32)
    res = jgc.check_seeds(loss, buggy, init, KEYS, x, check=jgc.check_directions, key=jax.random.key(1), num=4)
    assert isinstance(res, jgc.DirectionCheck) and res.numeric["W"].shape == (6, 4)
    expected = np.asarray([init(k)["b"][0] > 0 for k in KEYS])
    np.testing.assert_array_equal(~np.asarray(res.passed), expected)
    res = jgc.check_seeds(loss, grad, init, KEYS, x, coords=3, key=jax.random.key(1))
    assert isinstance(res, jgc.SampledCheck) and res.passed.all() and res.sampled == 3


def test_bad_input():
    x = x_of(jnp.float32)
    with pytest.raises(TypeError, match=re.escape("init_fn must be a callable; received int: 3.")):
        jgc.check_seeds(loss, grad, 3, KEYS, x)
    with pytest.raises(ValueError, match=re.escape("stacked_params must be stacked along a leading axis")):
        jgc.check_snapshots(loss, grad, {"W": jnp.zeros((2, 3, 2)), "b": jnp.zeros((3, 2))}, x)


def test_snapshots_equal_the_stacked_single_checks():
    """check_snapshots is the stack of the same check at each point (run as one traced program, like
    jax.jit(check_grad) per point): every field's structure, verdict and value."""
    with jax.enable_x64(True):
        init, x = make_init(jnp.float64), x_of(jnp.float64)
        snaps = [init(k) for k in KEYS[:3]]
        # one chunk size for both (check_snapshots' default shares the memory budget among the points)
        res = jgc.check_snapshots(loss, buggy, jax.tree.map(lambda *s: jnp.stack(s), *snaps), x, chunk_size=8)
        single = jax.jit(lambda p: jgc.check_grad(loss, buggy, p, x, chunk_size=8))
        stacked = jax.tree.map(lambda *a: np.stack(a), *[single(p) for p in snaps])
        assert jax.tree.structure(res) == jax.tree.structure(stacked)
        for a, b in zip(jax.tree.leaves(res), jax.tree.leaves(stacked), strict=True):
            if np.asarray(a).dtype.kind in "biu":
                np.testing.assert_array_equal(np.asarray(a), b)
            else:  # batched and single evaluations may round the loss differently by an ulp
                np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-8)
