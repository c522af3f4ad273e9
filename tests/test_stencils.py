"""Stencils (central, forward, five_point, complex_step), the noise estimate and its cost."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc
from jgc import _stencils

METHODS = ["central", "forward", "five_point", "complex_step"]


def loss(p, x, *_):
    return jnp.sum(jnp.tanh(p["W"] @ x)) + 0.5 * jnp.sum(p["b"] ** 2) + jnp.sum(p["b"] * x[:2])


def grad(p, x, variant):
    """variant 0: correct; 1: the gradient of b doubled (a planted bug)."""
    gW = jnp.outer(1 - jnp.tanh(p["W"] @ x) ** 2, x)
    gb = p["b"] + x[:2]
    return {"W": gW, "b": jnp.where(variant == 1, 2 * gb, gb)}


def params_batch(dtype):
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"W": jax.random.normal(k1, (2, 2, 3), dtype), "b": jax.random.normal(k2, (2, 2), dtype)}


def check_methods(method, dtype, transform):
    x = jnp.array([0.5, -1.0, 2.0], dtype)

    def check(p):
        return jax.vmap(lambda v: jgc.check_grad(loss, grad, p, x, v, method=method))(jnp.arange(2))

    res = transform(check, params_batch(dtype))
    passed = np.asarray(res.passed)  # (batch, variant)
    assert passed[:, 0].all(), res.report()
    assert not passed[:, 1].any()
    assert not np.asarray(res.leaf_passed["b"])[:, 1].any()
    assert np.asarray(res.leaf_passed["W"]).all()
    assert res.method == method
    assert np.all(np.asarray(res.noise_floor)[:, 0] < np.asarray(res.tol)[:, 0])


@pytest.mark.parametrize("method", METHODS)
def test_methods_pass_and_catch(method, dtype):
    check_methods(
        method,
        dtype,
        lambda check, batch: jax.tree.map(lambda x: jnp.asarray(x)[None], check(jax.tree.map(lambda x: x[0], batch))),
    )


@pytest.mark.parametrize("method", ["central", "complex_step"])
def test_methods_under_transforms(method, transform):
    check_methods(method, jnp.float32, transform)


@pytest.mark.parametrize(("method", "per_coord"), [("central", 4), ("forward", 2), ("five_point", 6), ("complex_step", 2)])
def test_num_evals_counts_the_error_estimate(method, per_coord):
    p = {"W": jnp.ones((2, 3)), "b": jnp.ones(2)}
    res = jgc.check_grad(loss, lambda p, x: grad(p, x, 0), p, jnp.array([0.5, -1.0, 2.0]), method=method)
    # per coordinate: the method's offsets and their doubles; plus J(θ) twice (determinism)
    assert int(res.num_evals) == 8 * per_coord + 2
    assert _stencils.extended(_stencils.get(method)).stencil.evals_per_probe == per_coord


def test_extended_weights_give_the_doubled_step():
    ext = _stencils.extended(_stencils.get("central"))
    assert ext.stencil.offsets == (1.0, -1.0, 2.0, -2.0, 0.0)
    assert ext.stencil.weights == (0.5, -0.5, 0.0, 0.0, 0.0)
    assert ext.weights2 == (0.0, 0.0, 0.25, -0.25, 0.0)
    assert ext.one_sided
    assert not _stencils.extended(_stencils.get("forward")).one_sided


def test_noise_floor_discounts_rounding_in_float32():
    # A large constant in a float32 loss: rounding of J (~u·|J|/h) swamps the
    # finite difference; the raw relative error exceeds tol, but it is within noise.
    f = lambda p: jnp.sum(p**2) + 3e3  # noqa: E731
    p = 0.7 * jnp.array([0.31, -0.72, 0.55, 0.93, -0.18, 0.64], jnp.float32)
    res = jgc.check_grad(f, lambda p: 2 * p, p, eps=3e-3)
    assert float(res.rel_error) > float(res.tol)
    assert float(res.excess_rel_error) <= float(res.tol)
    assert bool(res.passed)
    assert float(res.noise_floor) > float(res.tol)
    text = res.report()
    assert "noise floor" in text and "warning: the noise floor" in text and "x64=True" in text
    bad = jgc.check_grad(f, lambda p: 3 * p, p, eps=3e-3)  # 50% off: still well above the noise
    assert not bool(bad.passed)


def test_noise_is_small_in_float64():
    with jax.enable_x64(True):
        p = {"W": jnp.ones((2, 3)), "b": jnp.ones(2)}
        res = jgc.check_grad(loss, lambda p, x: grad(p, x, 0), p, jnp.array([0.5, -1.0, 2.0]))
        noise = np.asarray(res.noise["W"])
        assert noise.dtype == np.float64 and (noise > 0).all() and (noise < 1e-7).all()


def test_complex_step_is_exact_to_rounding():
    with jax.enable_x64(True):
        p = {"W": jnp.full((2, 3), 0.3), "b": jnp.ones(2)}
        res = jgc.check_grad(loss, lambda p, x: grad(p, x, 0), p, jnp.array([0.5, -1.0, 2.0]), method="complex_step")
        assert float(res.rel_error) < 1e-14


def test_complex_step_rejects_a_loss_that_drops_the_imaginary_part():
    real_only = lambda p: jnp.sum(jnp.real(p) ** 2)  # noqa: E731
    with pytest.raises(TypeError, match=re.escape("method='complex_step' evaluates loss_fn at complex parameters")) as e:
        jgc.check_grad(real_only, lambda p: 2 * p, jnp.ones(3), method="complex_step")
    assert "returned a real float32" in str(e.value) and "method='central'" in str(e.value)


def test_complex_step_rejects_a_loss_that_fails_on_complex_input():
    floors = lambda p: jnp.sum(jnp.floor(p) + p**2)  # noqa: E731
    with pytest.raises(TypeError, match=re.escape("but loss_fn raised")) as e:
        jgc.check_grad(floors, lambda p: 2 * p, jnp.ones(3), method="complex_step")
    assert "method='central'" in str(e.value)


def test_numeric_grad_complex_step():
    g = jgc.numeric_grad(lambda p: jnp.sum(p**3), jnp.array([1.0, 2.0]), method="complex_step")
    np.testing.assert_allclose(np.asarray(g), [3.0, 12.0], rtol=1e-6)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match=re.escape("'complex_step'")):
        jgc.check_grad(lambda p: jnp.sum(p), None, jnp.ones(2), method="complex")
