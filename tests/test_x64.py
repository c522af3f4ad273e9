"""check_grad(..., x64=True): a float32 model checked in float64, the setting restored."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"])) + jnp.sum(p["b"] ** 2)


def grad(p, x):
    return {"W": x.T @ (1 - jnp.tanh(x @ p["W"]) ** 2), "b": 2 * p["b"]}


def bad_grad(p, x):
    return {"W": x.T @ (1 - jnp.tanh(x @ p["W"]) ** 2), "b": p["b"]}


def setup():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"W": jax.random.normal(k1, (3, 2)), "b": jnp.array([0.5, -1.0])}, jax.random.normal(k2, (4, 3))


def test_x64_checks_in_float64_and_restores():
    assert not jax.config.jax_enable_x64
    p, x = setup()
    res = jgc.check_grad(loss, grad, p, x, x64=True)
    assert not jax.config.jax_enable_x64
    assert bool(res.passed)
    assert np.asarray(res.eps).dtype == np.float64
    assert np.asarray(res.numeric["W"]).dtype == np.float64
    assert float(res.tol) == 1e-6 and float(res.rel_error) < 1e-8
    assert p["W"].dtype == jnp.float32 and x.dtype == jnp.float32  # inputs untouched
    assert "float64" in res.report() and "float32 verdicts" not in res.report()


def test_x64_catches_bug_and_names_leaf():
    p, x = setup()
    res = jgc.check_grad(loss, bad_grad, p, x, x64=True)
    assert not bool(res.passed)
    assert not bool(res.leaf_passed["b"]) and bool(res.leaf_passed["W"])
    with pytest.raises(jgc.GradCheckError, match=re.escape("['b']")):
        jgc.assert_grad(loss, bad_grad, p, x, x64=True)
    assert not jax.config.jax_enable_x64


def test_x64_restored_after_error():
    p, x = setup()

    def broken(p, x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        jgc.check_grad(broken, grad, p, x, x64=True)
    assert not jax.config.jax_enable_x64


def test_x64_keeps_an_enabled_setting():
    p, x = setup()
    with jax.enable_x64(True):
        res = jgc.check_grad(loss, grad, p, x, x64=True)
        assert jax.config.jax_enable_x64
    assert bool(res.passed)


def test_x64_refused_under_jit_and_vmap():
    p, x = setup()
    msg = "x64=True cannot be used inside jax.jit, jax.vmap or another transformation: params['W'] is a traced value"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jax.jit(lambda p: jgc.check_grad(loss, grad, p, x, x64=True))(p)
    with pytest.raises(ValueError, match=re.escape("args[0] is a traced value")):
        jax.vmap(lambda x: jgc.check_grad(loss, grad, p, x, x64=True))(jnp.stack([x, x]))


def test_x64_must_be_bool():
    p, x = setup()
    with pytest.raises(TypeError, match=re.escape("x64 must be True or False; received str: 'yes'")):
        jgc.check_grad(loss, grad, p, x, x64="yes")
