"""taylor_test: rate 2 for a right discrete adjoint of an RK4 ODE, rate 1 for a wrong one; the
second-order test (rate 3) with a hand-written HVP; hard cases that must never fail."""

import re

import _ode
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import counting

import jgc


def _batch(dtype, n=2, d=6):
    ps = [_ode.problem(d, dtype, jax.random.key(i)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *ps)


@pytest.mark.slow_transforms("jit", "vmap")  # the ODE under jit/vmap in the slow tier; the sin loss below in the default one
@pytest.mark.parametrize("bug", [False, True])
def test_ode_adjoint(dtype, transform, bug):
    def check(problem):
        p, y0, target = problem
        grad = lambda p, y0, t: _ode.adjoint(p, y0, t, bug=bug)  # noqa: E731
        return jgc.taylor_test(_ode.loss, grad, p, y0, target, key=jax.random.key(1))

    res = transform(check, _batch(dtype))
    assert res.kind == "taylor_test" and res.expected_rate == 2
    np.testing.assert_array_equal(res.passed, not bug)
    np.testing.assert_array_equal(res.failed, bug)
    rate = np.asarray(res.rate)
    assert np.all(np.abs(rate - (1.0 if bug else 2.0)) < 0.2), rate
    if bug:  # the forgotten stage is ≈ 1/6 of the gradient: ~9% relative along h
        assert np.all((np.asarray(res.rel_error) > 0.02) & (np.asarray(res.rel_error) < 0.3))
    ladders = 2 if dtype == jnp.float64 else 1  # float64: the float32 ladder too, for a loss computing in float32
    assert res.num_evals == 1 + 8 + ladders * (8 + 2 * 8)  # J(θ), the fine table, per ladder its rungs and two tables


def test_report_names_the_rates_and_where_rounding_took_over():
    p, y0, target = _ode.problem(6, jnp.float32)
    res = jgc.taylor_test(_ode.loss, lambda p, y0, t: _ode.adjoint(p, y0, t, bug=True), p, y0, target, key=jax.random.key(1))
    report = res.report()
    assert re.match(r"jgc taylor_test FAILED: rate (0\.9|1\.0)", report)
    assert "(expected 2, wrong terms give 1): ⟨g, h⟩ is off by" in report
    assert "not the remainder of right terms" in report
    right = jgc.taylor_test(_ode.loss, _ode.adjoint, p, y0, target, key=jax.random.key(1))
    assert re.search(r"^jgc taylor_test passed: rate (1\.[89]|2\.[01])\d \(expected 2\)", right.report())
    assert "rounding took over below ε = " in right.report()


def _sin_loss(w):
    return jnp.sum(jnp.sin(w) ** 2) + 0.1 * jnp.sum(w**3)


def _sin_grad(w):
    return jnp.sin(2 * w) + 0.3 * w**2


def _sin_hvp(w, v):
    return (2 * jnp.cos(2 * w) + 0.6 * w) * v


def test_transforms(dtype, transform):
    """plain, jit and vmap on a cheap loss: a right gradient never fails (and passes in float64,
    where the rungs above rounding prove ⟨g, h⟩ within tol; float32 may be inconclusive at a
    point where ⟨g, h⟩ is small), a wrong one fails."""
    ws = jnp.stack([jnp.linspace(0.3, 1.4, 6), jnp.linspace(-1.0, 0.5, 6)]).astype(dtype)
    right = transform(lambda w: jgc.taylor_test(_sin_loss, _sin_grad, w, key=jax.random.key(2)), ws)
    wrong = transform(lambda w: jgc.taylor_test(_sin_loss, lambda w: 1.2 * _sin_grad(w), w, key=jax.random.key(2)), ws)
    np.testing.assert_array_equal(right.failed, False)
    if dtype == jnp.float64:
        np.testing.assert_array_equal(right.passed, True)
    np.testing.assert_array_equal(wrong.failed, True)
    assert right.eps.shape[-1] == 8 + 3


def test_second_call_compiles_nothing():
    """The measuring program is cached on the functions: another point of the same shapes reuses it."""
    w, w2, key = jnp.linspace(0.3, 1.4, 6), jnp.linspace(-1.0, 0.5, 6), jax.random.key(2)
    assert jgc.taylor_test(_sin_loss, _sin_grad, w, key=jax.random.key(0)).status == "passed"
    with counting() as c:
        res = jgc.taylor_test(_sin_loss, _sin_grad, w2, key=key)
    assert res.status == "passed" and c["compiles"] == 0


def test_second_order_rate_three():
    with jax.enable_x64(True):
        w = jnp.linspace(0.3, 1.4, 6)
        key = jax.random.key(2)
        right = jgc.taylor_test(_sin_loss, _sin_grad, w, key=key, hvp_fn=_sin_hvp)
        wrong_hvp = jgc.taylor_test(_sin_loss, _sin_grad, w, key=key, hvp_fn=lambda w, v: 2 * jnp.cos(2 * w) * v)
        wrong_grad = jgc.taylor_test(_sin_loss, lambda w: jnp.sin(2 * w), w, key=key, hvp_fn=_sin_hvp)
    assert right.status == "passed" and right.expected_rate == 3 and abs(float(right.rate) - 3) < 0.2
    assert wrong_hvp.status == "failed" and abs(float(wrong_hvp.rate) - 2) < 0.2 and not bool(wrong_hvp.gradient_failed)
    assert wrong_grad.status == "failed" and bool(wrong_grad.gradient_failed)
    assert "the gradient is wrong" in wrong_grad.report()


# Hard cases for a right gradient: the test may pass or be inconclusive, never fail. Each family
# runs over 16 seeds in one compiled vmap.
def _nearly_linear(dtype):  # the remainder is at rounding from the first rung
    w = jnp.linspace(-1, 1, 20, dtype=dtype)
    return lambda k: jax.random.normal(k, (20,), dtype), lambda t: 1e6 + jnp.dot(w, t) + 1e-7 * jnp.sum(t**2)


def _large(dtype):
    return lambda k: 1e4 * (1 + jax.random.normal(k, (20,), dtype)), lambda t: jnp.sum(t**2) + 1e-9 * jnp.sum(t**4)


def _wiggly(dtype):  # oscillates far below the ladder's scale
    return lambda k: 1 + jax.random.uniform(k, (20,), dtype), lambda t: jnp.sum(jnp.sin(300 * t)) / 300


def _linear(dtype):
    w = jnp.linspace(-1, 1, 20, dtype=dtype)
    return lambda k: jax.random.normal(k, (20,), dtype), lambda t: jnp.dot(w, t)


def _hard(family, dtype, seeds=16):
    init, loss = family(dtype)
    grad = jax.grad(loss)

    def one(k):
        return jgc.taylor_test(loss, grad, init(k), key=jax.random.fold_in(k, 1))

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), seeds))


@pytest.mark.parametrize("family", [_nearly_linear, pytest.param(_large, marks=pytest.mark.slow), _wiggly])
def test_hard_cases_never_fail_float32(family):
    res = _hard(family, jnp.float32)
    assert not np.any(np.asarray(res.failed))


def test_linear_loss_passes_on_its_remainder_bound():
    """A linear loss: the remainder stays at rounding on every rung, which bounds the error of ⟨g, h⟩
    far below tol (a pass); a wrong gradient of it fails (rate 1)."""
    res = _hard(_linear, jnp.float32, seeds=4)
    assert np.all(np.asarray(res.passed)) and np.all(np.isnan(np.asarray(res.rate)))
    init, loss = _linear(jnp.float32)
    wrong = jgc.taylor_test(loss, lambda t: 1.1 * jax.grad(loss)(t), init(jax.random.key(0)), key=jax.random.key(1))
    assert wrong.status == "failed"


@pytest.mark.slow
@pytest.mark.parametrize("family", [_nearly_linear, _large, _wiggly, _linear])
def test_hard_cases_never_fail_float64(family):
    with jax.enable_x64(True):
        res = _hard(family, jnp.float64, seeds=64)
    assert not np.any(np.asarray(res.failed))


def test_pytree_params_with_integer_leaf_and_direction():
    """Integer leaves are passed through; a given direction replaces the random one."""
    p = {"w": jnp.linspace(0.5, 1.5, 4), "n": jnp.array(3)}
    loss = lambda p: jnp.sum(jnp.sin(p["w"]) * p["n"])  # noqa: E731
    grad = lambda p: {"w": jnp.cos(p["w"]) * p["n"], "n": None}  # noqa: E731
    h = {"w": jnp.ones(4), "n": jnp.array(0)}
    res = jgc.taylor_test(loss, grad, p, direction=h)
    assert res.status == "passed"
    np.testing.assert_allclose(float(res.directional), float(jnp.sum(jnp.cos(p["w"]) * 3)), rtol=1e-6)


def test_errors():
    w = jnp.ones(3)
    with pytest.raises(TypeError, match=re.escape("key must be a PRNG key")):
        jgc.taylor_test(jnp.sum, jnp.ones_like, w)
    with pytest.raises(ValueError, match=re.escape("num_rungs must be between 3 and 16; received 2.")):
        jgc.taylor_test(jnp.sum, jnp.ones_like, w, key=jax.random.key(0), num_rungs=2)
    with pytest.raises(ValueError, match=re.escape("grad_fn output : shape (2,) != parameter shape (3,).")):
        jgc.taylor_test(jnp.sum, lambda w: w[:2], w, key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("loss_fn must return a scalar")):
        jgc.taylor_test(lambda w: w, jnp.ones_like, w, key=jax.random.key(0))
