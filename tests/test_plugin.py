"""The pytest plugin and jgc.testing, run in isolated pytest sessions with pytester."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc
import jgc.testing

pytest_plugins = ["pytester"]

# Load the plugin by module name, whichever checkout is pip-installed; `-p no:jgc`
# keeps an installed entry point from registering the same module a second time. The
# module may already be imported by this outer session (--doctest-modules collects
# jgc/), so pytest cannot assertion-rewrite it again: ignore only that warning.
PLUGIN = ("-p", "no:jgc", "-p", "jgc._pytest_plugin", "-W", "ignore::pytest.PytestAssertRewriteWarning")

TESTS = """
import jax, jax.numpy as jnp, pytest

def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]) ** 2)

def grad_right(p, x):
    t = jnp.tanh(x @ p["W"])
    return {"W": x.T @ (2 * t * (1 - t ** 2))}

def grad_wrong(p, x):
    t = jnp.tanh(x @ p["W"])
    return {"W": x.T @ (2 * t)}

def init(key):
    return {"W": jax.random.normal(key, (3, 2))}

X = jnp.arange(12.0).reshape(4, 3) / 10

def test_right(gradcheck):
    res = gradcheck.grad(loss, grad_right, init, X)
    assert res.passed.shape == (gradcheck.seeds,)

def test_wrong(gradcheck):
    gradcheck.grad(loss, grad_wrong, init, X)

@pytest.mark.gradcheck(seeds=3, tol=1e-3)
def test_marker(gradcheck):
    assert gradcheck.seeds == 3 and gradcheck.options == {"tol": 1e-3}
    res = gradcheck(loss, grad_right, init, X)
    assert float(res.tol[0]) == pytest.approx(1e-3)

def test_vjp(gradcheck):
    f = lambda x: jnp.sin(x)
    gradcheck.vjp(f, lambda pr, c: (jnp.cos(pr[0]) * c,), jnp.arange(3.0))

def test_not_using_the_plugin():
    assert True
"""


def test_plugin_runs_checks_and_reports(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", "--jgc-seeds", "5")
    result.assert_outcomes(passed=4, failed=1)
    out = result.stdout.str()
    assert "test_wrong" in out and "GradCheckError" in out
    assert "jgc batched check over 5 seeds (batch shape (5,)): 5 FAILED (seeds 0, 1, 2, 3, 4)" in out
    assert "jgc check_grad FAILED: ['W'] differ beyond the noise" in out
    assert "✗ ['W']" in out
    # the report is the failure: jgc's own frames (and their docstrings, the params' repr) are hidden
    failure = out[out.index("test_wrong") :]
    assert "jgc/_pytest_plugin.py" not in failure and "jgc/testing.py" not in failure and "jgc/_check.py" not in failure


def test_plugin_default_seeds_and_marker_registered(pytester):
    pytester.makepyfile(TESTS, test_default="def test_default(gradcheck):\n    assert gradcheck.seeds == 4\n")
    result = pytester.runpytest(
        *PLUGIN, "-p", "no:cacheprovider", "--strict-markers", "-k", "test_right or test_marker or test_default"
    )
    result.assert_outcomes(passed=3)
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.gradcheck(seeds=N, **options)*"])


def test_plugin_is_inert_without_the_fixture(pytester):
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("-W", "error", *PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "jgc" not in result.stdout.str()


# ---------------------------------------------------------------- jgc.testing, directly


def _loss(p):
    return jnp.sum(p["w"] ** 3)


def test_assert_grad_seeds_passes_and_fails(dtype):
    init = lambda k: {"w": jax.random.normal(k, (3,), dtype)}  # noqa: E731
    res = jgc.testing.assert_grad_seeds(_loss, lambda p: {"w": 3 * p["w"] ** 2}, init, 3)
    assert res.passed.shape == (3,) and bool(np.all(res.passed))
    with pytest.raises(jgc.GradCheckError, match=re.escape("jgc batched check over 3 seeds")) as info:
        jgc.testing.assert_grad_seeds(_loss, lambda p: {"w": 2 * p["w"] ** 2}, init, 3)
    assert "✗ ['w']" in str(info.value)
    assert isinstance(info.value, AssertionError)


def test_assert_helpers_for_rules():
    x = jnp.array([0.3, -0.7, 1.1])
    jgc.testing.assert_vjp(jnp.tanh, lambda pr, c: (c * (1 - jnp.tanh(pr[0]) ** 2),), x, n_seeds=2)
    jgc.testing.assert_jvp(jnp.tanh, lambda pr, t: t[0] * (1 - jnp.tanh(pr[0]) ** 2), x)
    with pytest.raises(jgc.GradCheckError, match=re.escape("jgc check_vjp FAILED")):
        jgc.testing.assert_vjp(jnp.tanh, lambda pr, c: (c * (1 + jnp.tanh(pr[0]) ** 2),), x)
    jgc.testing.assert_hvp(_loss, lambda p, v: {"w": 6 * p["w"] * v["w"]}, {"w": x})
    with pytest.raises(jgc.GradCheckError, match=re.escape("jgc check_hvp FAILED")):
        jgc.testing.assert_hvp(_loss, lambda p, v: {"w": 3 * p["w"] * v["w"]}, {"w": x})
    with pytest.raises(ValueError, match=re.escape("n_seeds must be a positive int; received 0")):
        jgc.testing.assert_grad_seeds(_loss, None, lambda k: {"w": x}, 0)
    with pytest.raises(TypeError, match=re.escape("assert_passed expects a jgc.GradCheck; received dict")):
        jgc.testing.assert_passed({})
