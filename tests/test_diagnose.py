"""Diagnosis hints: each planted bug gets its hint, correct gradients get none."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc
from jgc import _diagnose as D

LAM = 0.3


def loss(p, x, t, *_):
    return jnp.sum(jnp.tanh(p["W"] @ x) * t) + 0.5 * LAM * jnp.sum(p["W"] ** 2) + jnp.sum(jnp.sin(p["b"]))


def true_grad(p, x, t):
    y = jnp.tanh(p["W"] @ x)
    return {"W": jnp.outer(t * (1 - y**2), x) + LAM * p["W"], "b": jnp.cos(p["b"])}


# (name, planted W gradient from the correct one g and params p, expected code, expected parameter)
BUGS = [
    ("correct", lambda g, p: g, D.NONE, 0.0),
    ("double", lambda g, p: 2 * g, D.SCALED, 2.0),
    ("half", lambda g, p: 0.5 * g, D.SCALED, 0.5),
    ("sign", lambda g, p: -g, D.SCALED, -1.0),
    ("mean_not_sum", lambda g, p: g / 4, D.SCALED, 0.25),
    ("zero", lambda g, p: jnp.zeros_like(g), D.ZERO, 0.0),
    ("transposed", lambda g, p: g.T, D.TRANSPOSED, 0.0),
    ("forgot_l2", lambda g, p: g - LAM * p["W"], D.L2, LAM),
    ("l2_twice", lambda g, p: g + LAM * p["W"], D.L2, -LAM),
    ("one_row", lambda g, p: g.at[1].mul(3.0), D.ROWS, 1.0),
    ("one_column", lambda g, p: g.at[:, 2].set(0.0), D.COLUMNS, 1.0),
]


def grad(p, x, t, v):
    g = true_grad(p, x, t)
    planted = [f(g["W"], p) for _, f, _, _ in BUGS]
    return {"W": jnp.stack(planted)[v], "b": g["b"]}


def test_hints(dtype, transform):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(7), 4)
    batch = {"W": jax.random.normal(k1, (2, 4, 4), dtype), "b": jax.random.normal(k2, (2, 3), dtype)}
    x, t = jax.random.normal(k3, (4,), dtype), jax.random.normal(k4, (4,), dtype)

    def check(p):
        return jax.vmap(lambda v: jgc.check_grad(loss, grad, p, x, t, v))(jnp.arange(len(BUGS)))

    res = transform(check, batch)
    hint, param = res.per_leaf(res.diagnosis.hint, fill=0), res.per_leaf(res.diagnosis.param, fill=0)
    codes, params = np.asarray(hint["W"]), np.asarray(param["W"])
    passed = np.asarray(res.passed)
    assert (np.asarray(hint["b"]) == D.NONE).all()
    for i, (name, _, code, param) in enumerate(BUGS):
        assert (passed[:, i] == (name == "correct")).all(), name
        assert (codes[:, i] == code).all(), (name, codes[:, i])
        np.testing.assert_allclose(params[:, i], param, rtol=1e-3, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def reports():
    """The report of every variant, from one batched float64 check."""
    with jax.enable_x64(True):
        k1, k2, k3, k4 = jax.random.split(jax.random.key(7), 4)
        p = {"W": jax.random.normal(k1, (4, 4), jnp.float64), "b": jax.random.normal(k2, (3,), jnp.float64)}
        x, t = jax.random.normal(k3, (4,), jnp.float64), jax.random.normal(k4, (4,), jnp.float64)
        res = jax.vmap(lambda v: jgc.check_grad(loss, grad, p, x, t, v))(jnp.arange(len(BUGS)))
    one = lambda i: jax.tree.map(lambda a: a[i], res)  # noqa: E731
    return {name: one(i).report() for i, (name, *_) in enumerate(BUGS)}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("double", "hint: analytic ≈ 2 × numeric"),
        ("half", "hint: analytic ≈ 1/2 × numeric"),
        ("sign", "hint: analytic ≈ -1 × numeric"),
        ("mean_not_sum", "hint: analytic ≈ 1/4 × numeric"),
        ("zero", "hint: analytic ≈ 0"),
        ("transposed", "hint: analytic ≈ numeric transposed"),
        ("forgot_l2", "forgotten or mis-scaled L2 term, λ ≈ 0.3"),
        ("one_row", "hint: error confined to 1 row [1]"),
        ("one_column", "hint: error confined to 1 column [2]"),
    ],
)
def test_hint_in_report(reports, name, text):
    assert text in reports[name]
    assert "hint" not in reports["correct"]


@pytest.mark.parametrize(("c", "text"), [(2.0, "2"), (0.5, "1/2"), (-1.0, "-1"), (0.2, "1/5"), (-0.5, "-1/2"), (0.37, "0.37")])
def test_fraction(c, text):
    assert D._fraction(c) == text
