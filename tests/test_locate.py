"""jgc.locate: adaptive group testing (host-side, so no jit/vmap variants)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

FIXED = 66 + 2 * 9  # the noise probe and J(θ), and the first chunk (9 probes) once more


def loss(p, y):
    return sum(0.5 * jnp.sum((jnp.tanh(p[k]) - y[k]) ** 2) for k in p)


def grad(p, y, wrong=()):
    g = {k: (jnp.tanh(p[k]) - y[k]) * (1 - jnp.tanh(p[k]) ** 2) for k in p}
    for leaf, index in wrong:
        g[leaf] = g[leaf].at[index].multiply(-1.0)
    return g


def problem(dtype):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    p = {"W": jax.random.normal(k1, (64, 32), dtype), "b": jax.random.normal(k2, (32,), dtype)}
    noise = {"W": jax.random.normal(k3, (64, 32), dtype), "b": jax.random.normal(k4, (32,), dtype)}
    y = {k: jnp.tanh(p[k]) + 0.1 * noise[k] for k in p}
    return p, y


def test_correct_finds_nothing(dtype):
    p, y = problem(dtype)
    found = jgc.locate(loss, grad, p, y, key=jax.random.key(0))
    assert found.wrong == () and found.complete
    # one level: 4 directions on each leaf (x2 evaluations, x2 again where the step 2h was needed), the
    # noise probe and J(θ) (66), the first chunk once more (9 probes x 2), and what re-measuring cost
    spent = found.num_evals - found.resolve_evals
    assert found.levels == 1 and 2 * 2 * 4 + FIXED <= spent <= 2 * 2 * 4 * 2 + FIXED


def test_single_wrong_coordinate(dtype):
    p, y = problem(dtype)
    bad = ("W", (37, 5))
    found = jgc.locate(loss, lambda p, y: grad(p, y, [bad]), p, y, key=jax.random.key(1))
    assert [(c.path, c.index) for c in found.wrong] == [("['W']", (37, 5))]
    want = float(grad(p, y)["W"][bad[1]])
    (c,) = found.wrong
    np.testing.assert_allclose(c.numeric, want, rtol=1e-2 if dtype == jnp.float32 else 1e-6)
    assert c.analytic == -want
    # log2(2048 / 8) = 8 halvings, 2 halves x 4 directions x 2 evaluations each, plus level 0 and the
    # last coordinates, besides the confirmation of each failing block at a second step
    assert found.num_evals - found.resolve_evals <= FIXED + 2 * (16 + 8 * 16 + 16 + 16)


def test_several_wrong_coordinates(dtype):
    p, y = problem(dtype)
    bad = [("W", (0, 0)), ("W", (63, 31)), ("W", (20, 7)), ("b", (3,))]
    found = jgc.locate(loss, lambda p, y: grad(p, y, bad), p, y, key=jax.random.key(2))
    assert sorted((c.path, c.index) for c in found.wrong) == sorted((f"['{k}']", i) for k, i in bad)
    assert found.complete
    assert "4 wrong coordinate(s)" in str(found)


def test_max_wrong_truncates():
    p, y = problem(jnp.float32)
    wrong = lambda p, y: {**grad(p, y), "W": 2 * grad(p, y)["W"]}  # noqa: E731  (every coordinate of W)
    found = jgc.locate(loss, wrong, p, y, key=jax.random.key(3), max_wrong=2)
    assert not found.complete and "incomplete" in str(found)
    assert 1 <= len(found.wrong) <= 2 * 2 * 8 and all(c.path == "['W']" for c in found.wrong)


def test_not_under_jit():
    p, y = problem(jnp.float32)
    with pytest.raises(TypeError, match=re.escape("locate is host-side")):
        jax.jit(lambda p: jgc.locate(loss, grad, p, y, key=jax.random.key(0)))(p)
