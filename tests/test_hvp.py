"""check_hvp: full Hessian and random vectors; planted bugs fail on the right leaf."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import fixed_evals

import jgc


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]) ** 2) + 0.5 * jnp.sum(p["b"] ** 2) * jnp.sum(p["W"] ** 2)


def hvp(p, v, x):
    return jax.jvp(lambda q: jax.grad(loss)(q, x), (p,), (v,))[1]


def hvp_bad_b(p, v, x):  # planted bug: drops the mixed W–b term from the b block
    out = hvp(p, v, x)
    return {"W": out["W"], "b": v["b"] * jnp.sum(p["W"] ** 2)}


def _batch(dtype, n=2):
    k1, k2 = jax.random.split(jax.random.key(0))
    p = {"W": jax.random.normal(k1, (n, 3, 2), dtype), "b": jnp.full((n, 2), 0.5, dtype)}
    x = jax.random.normal(k2, (4, 3), dtype)
    return p, x


def _leaf_passed(res, path):
    return np.asarray(jax.tree_util.tree_leaves(res.leaf_passed)[res.layout.paths.index(path)])


@pytest.mark.parametrize("bad", [False, True])
def test_check_hvp_full(dtype, transform, bad):
    _run(dtype, transform, bad, "full")


@pytest.mark.parametrize("bad", [False, True])
def test_check_hvp_random_vectors(dtype, bad):
    def vmap(check, batch):  # random vectors: under vmap only, the plain and jit paths are shared with "full"
        return jax.vmap(check)(batch)

    _run(dtype, vmap, bad, "random")


def _run(dtype, transform, bad, mode):
    p, x = _batch(dtype)
    key = None if mode == "full" else jax.random.key(1)
    rule = hvp_bad_b if bad else hvp
    res = transform(lambda q: jgc.check_hvp(loss, rule, q, x, key=key, num_vectors=3), p)
    assert res.kind == "check_hvp"
    probes = 8 if mode == "full" else 3
    assert res.layout.shapes == ((probes, 3, 2), (probes, 2))
    np.testing.assert_array_equal(res.passed, not bad)
    np.testing.assert_array_equal(_leaf_passed(res, "['b']"), not bad)
    np.testing.assert_array_equal(_leaf_passed(res, "['W']"), True)
    # 2 gradient evaluations per probe, 2 more where the step 2h was needed, the noise probe, g(θ),
    # the first chunk twice (determinism), and what resolution cost
    first = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape((-1,) + np.shape(a)[np.ndim(res.passed) :])[0], res)
    fixed = fixed_evals(first, chunk=jgc._engine.chunk_size(8, probes + 1, 2))  # θ: 8 coordinates
    spent = int(first.num_evals) - int(first.resolve_evals)
    assert fixed + 2 * probes <= spent <= fixed + 4 * probes, (spent, fixed)


def test_hvp_with_grad_fn_and_report():
    with jax.enable_x64(True):
        p, x = jax.tree_util.tree_map(lambda a: a[0], _batch(jnp.float64))
        x = x.astype(jnp.float64)
        res = jgc.check_hvp(loss, hvp, p, x, grad_fn=jax.grad(loss))
        assert float(res.rel_error) < 1e-8
        # the full Hessian: numeric[k] is column k of H
        H = jax.hessian(lambda t: loss({"W": t[:6].reshape(3, 2), "b": t[6:]}, x))(jnp.concatenate([p["W"].ravel(), p["b"]]))
        np.testing.assert_allclose(np.asarray(res.numeric["b"]), H[:, 6:], atol=1e-7)
        report = jgc.check_hvp(loss, hvp_bad_b, p, x, grad_fn=jax.grad(loss)).report()
    assert report.startswith("jgc check_hvp FAILED")
    assert "gradient evaluations" in report
    assert "✗ ['b']" in report


def test_hvp_errors():
    p, x = jax.tree_util.tree_map(lambda a: a[0], _batch(jnp.float32))
    with pytest.raises(TypeError, match=re.escape("hvp_fn must be a callable; received int: 3.")):
        jgc.check_hvp(loss, 3, p, x)
    with pytest.raises(ValueError, match=re.escape("hvp_fn output ['b']: shape (3,) != parameter shape (2,)")):
        jgc.check_hvp(loss, lambda p, v, x: {"W": v["W"], "b": jnp.zeros(3)}, p, x)
    with pytest.raises(ValueError, match=re.escape("num_vectors must be a positive int; received 0")):
        jgc.check_hvp(loss, hvp, p, x, key=jax.random.key(0), num_vectors=0)
