"""Stencils (central, forward, five_point, complex_step), the noise estimate and its cost."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import evals

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
    assert np.all(np.asarray(res.groups.upper)[:, 0] <= np.asarray(res.tol)[:, 0, None])  # resolved within tol


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


@pytest.mark.parametrize(("method", "m"), [("central", 2), ("forward", 1), ("five_point", 4), ("complex_step", 1)])
def test_num_evals_counts_every_evaluation(method, m):
    p = {"W": jnp.ones((2, 3)), "b": jnp.ones(2)}
    res = jgc.check_grad(loss, lambda p, x: grad(p, x, 0), p, jnp.array([0.5, -1.0, 2.0]), method=method)
    # the noise probe (24), J(θ) (m), m per coordinate, m more where the step 2h was needed, J(θ) again
    assert int(res.num_evals) == evals(res, m)
    assert _stencils.get(method).evals_per_probe == m


def test_doubled_stencils_and_kinks():
    central = _stencils.get("central")
    assert central.offsets == (1.0, -1.0) and central.doubled == (2.0, -2.0) and central.center == 0.0
    assert central.one_sided and _stencils.get("five_point").one_sided
    assert not _stencils.get("forward").one_sided and not _stencils.get("complex_step").one_sided
    assert _stencils.get("forward").center == -1.0
    np.testing.assert_allclose(central.noise_gain, np.sqrt(0.5))


def test_large_constant_in_float32_is_resolved_not_passed_blindly():
    # A large constant in a float32 loss: rounding of J (~u·|J|/h) swamps the finite
    # difference at the default step. Under jit nothing more can be done: inconclusive,
    # never a pass. On the host the step ladder and a float64 re-check resolve it.
    f = lambda p: jnp.sum(p**2) + 3e3  # noqa: E731
    p = 0.7 * jnp.array([0.31, -0.72, 0.55, 0.93, -0.18, 0.64], jnp.float32)
    traced = jax.jit(lambda q: jgc.check_grad(f, lambda p: 2 * p, q))(p)
    assert not bool(traced.passed) and not bool(traced.failed)
    assert float(traced.groups.upper[0]) > float(traced.tol)
    assert "INCONCLUSIVE" in traced.report() and "x64=True" in traced.report()
    res = jgc.check_grad(f, lambda p: 2 * p, p)
    assert bool(res.passed), res.report()
    assert any("float64 re-check" in n or "adapted steps" in n for n in res.notes)
    bad = jgc.check_grad(f, lambda p: 2.2 * p, p)  # 10% off
    assert bool(bad.failed), bad.report()


def test_noise_is_small_in_float64():
    with jax.enable_x64(True):
        p = {"W": jnp.ones((2, 3)), "b": jnp.ones(2)}
        res = jgc.check_grad(loss, lambda p, x: grad(p, x, 0), p, jnp.array([0.5, -1.0, 2.0]))
        noise = np.asarray(res.view(res.noise.bound)["W"])
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
