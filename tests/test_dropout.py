"""Dropout with an explicit key (examples/dropout.py), and detection of a non-deterministic loss."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jgc

_path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "dropout.py"
_spec = importlib.util.spec_from_file_location("dropout_example", _path)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)

GRADS = [ex.grad, ex.grad_forgot_mask, ex.grad_forgot_scale]


def select(p, x, y, key, v):
    return jax.lax.switch(v, [lambda *a, g=g: g(*a) for g in GRADS], p, x, y, key)


def test_dropout_example_verdicts(dtype, transform):
    batch, x, y, key = jax.vmap(lambda k: ex.init(k, dtype))(jax.random.split(jax.random.key(0), 2))
    x, y, key = x[0], y[0], key[0]

    def check(p):
        return jax.vmap(lambda v: jgc.check_grad(lambda p, x, y, k, v: ex.loss(p, x, y, k), select, p, x, y, key, v))(
            jnp.arange(len(GRADS))
        )

    res = transform(check, batch)
    passed = np.asarray(res.passed)
    assert passed[:, 0].all(), res.report()
    assert not passed[:, 1:].any()
    w1 = np.asarray(res.leaf_passed["W1"])
    assert not w1[:, 1:].any() and np.asarray(res.leaf_passed["W2"]).all()
    assert np.asarray(res.deterministic).all()


def test_forgotten_scale_is_diagnosed():
    params, x, y, key = ex.init(jax.random.key(1))
    res = jgc.check_grad(ex.loss, ex.grad_forgot_scale, params, x, y, key)
    assert "hint: analytic ≈ 0.8 × numeric" in res.report()


def test_nondeterministic_loss_is_detected(transform):
    batch, x, y, key = jax.vmap(lambda k: ex.init(k))(jax.random.split(jax.random.key(0), 2))
    x, y, key = x[0], y[0], key[0]
    res = transform(lambda p: jgc.check_grad(ex.loss_with_global_rng, ex.grad, p, x, y, key), batch)
    assert not np.asarray(res.passed).any()
    assert not np.asarray(res.deterministic).any()
    assert not np.asarray(res.kink["W1"]).any()
    text = res.report()
    assert "not deterministic" in text and "PRNG key passed in *args" in text


def test_example_main_runs(capsys):
    ex.main()
    out = capsys.readouterr().out
    assert out.count("FAILED") == 3 and "passed" in out
