"""check_grad(autodiff=True): three distances; a wrong custom_vjp is caught by autodiff vs numeric."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc


@jax.custom_vjp
def square(x):
    return x**2


square.defvjp(lambda x: (x**2, x), lambda x, g: (3 * x * g,))  # wrong rule: d(x²) is 2x, not 3x


def loss(p, x):
    return jnp.sum(square(p["w"] * x)) + jnp.sum(p["b"] ** 2)


def grad_right(p, x):
    return {"w": 2 * (p["w"] * x) * x, "b": 2 * p["b"]}


def grad_wrong(p, x):
    return {"w": 2 * (p["w"] * x) * x, "b": p["b"]}  # planted bug in b


def _batch(dtype):
    p = {"w": jnp.array([[0.3, -1.2, 0.7], [1.1, 0.4, -0.6]], dtype), "b": jnp.array([[0.5], [-0.2]], dtype)}
    return p, jnp.array([2.0, 0.5, 1.0], dtype)


@pytest.mark.parametrize("case", ["manual_right", "manual_wrong"])
def test_three_distances(dtype, transform, case):
    p, x = _batch(dtype)
    grad = grad_right if case == "manual_right" else grad_wrong
    res = transform(lambda q: jgc.check_grad(loss, grad, q, x, autodiff=True), p)
    # the custom_vjp rule is wrong, so autodiff disagrees with finite differences in every case
    np.testing.assert_array_less(0.05, res.autodiff.rel_error_numeric)
    np.testing.assert_array_less(0.05, res.autodiff.rel_error)
    np.testing.assert_array_equal(res.autodiff.passed, False)
    np.testing.assert_array_equal(res.passed, case == "manual_right")
    auto_w = np.asarray(res.view(res.autodiff.gradient)["w"])
    np.testing.assert_allclose(auto_w, 1.5 * np.asarray(res.numeric["w"]), rtol=1e-2)


def test_agreement_when_everything_is_right(dtype, transform):
    p, x = _batch(dtype)
    plain = lambda p, x: jnp.sum((p["w"] * x) ** 2) + jnp.sum(p["b"] ** 2)  # noqa: E731
    res = transform(lambda q: jgc.check_grad(plain, grad_right, q, x, autodiff=True), p)
    np.testing.assert_array_equal(res.autodiff.passed, True)
    np.testing.assert_array_less(res.autodiff.rel_error, 1e-6)
    np.testing.assert_array_less(res.autodiff.rel_error_numeric, res.tol)


def test_off_by_default_and_report_lines():
    p, x = jax.tree_util.tree_map(lambda a: a[0], _batch(jnp.float32))[0], _batch(jnp.float32)[1]
    off = jgc.check_grad(loss, grad_right, p, x)
    assert off.autodiff is None
    assert "autodiff" not in off.report()
    report = jgc.check_grad(loss, grad_right, p, x, autodiff=True).report()
    line = [s for s in report.splitlines() if "autodiff cross-check" in s][0]
    assert "manual vs numeric" in line and "manual vs autodiff" in line and "autodiff vs numeric" in line
    assert "wrong custom_vjp/custom_jvp rule" in report and "worst leaf ['w']" in report
    wrong = jgc.check_grad(lambda p, x: jnp.sum((p["w"] * x) ** 2) + jnp.sum(p["b"] ** 2), grad_wrong, p, x, autodiff=True)
    assert "jax.grad confirms finite differences: grad_fn is wrong" in wrong.report()


def test_autodiff_flag_validated():
    p, x = jax.tree_util.tree_map(lambda a: a[0], _batch(jnp.float32))[0], _batch(jnp.float32)[1]
    with pytest.raises(TypeError, match="autodiff must be True or False; received str"):
        jgc.check_grad(loss, grad_right, p, x, autodiff="yes")


def test_non_differentiable_code_is_caught():
    # stop_gradient hides a term from jax.grad, finite differences see it
    f = lambda p: jnp.sum(p["w"] ** 2) + jax.lax.stop_gradient(jnp.sum(p["w"] ** 3))  # noqa: E731
    g = lambda p: {"w": 2 * p["w"] + 3 * p["w"] ** 2}  # noqa: E731
    with jax.enable_x64(True):
        res = jgc.check_grad(f, g, {"w": jnp.array([0.5, -1.0], jnp.float64)}, autodiff=True)
        assert bool(res.passed) and not bool(res.autodiff.passed)
        assert float(res.autodiff.rel_error_numeric) > 0.1
