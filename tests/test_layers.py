"""check_vjp / check_jvp: correct rules pass, planted bugs fail and name the right leaf."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import fixed_evals

import jgc

N_PRIMAL = 3 * 2 + 2 + 4 * 3  # the primals' coordinates (W, b, x)


def linear(p, x):
    return x @ p["W"] + p["b"][None, :]


def linear_vjp(primals, c):
    p, x = primals
    return {"W": x.T @ c, "b": c.sum(0)}, c @ p["W"].T


def linear_vjp_bad_x(primals, c):  # planted bug: transposed-less input gradient scaled
    p, x = primals
    return {"W": x.T @ c, "b": c.sum(0)}, 1.5 * (c @ p["W"].T)


def linear_jvp(primals, tangents):
    (p, x), (tp, tx) = primals, tangents
    return tx @ p["W"] + x @ tp["W"] + tp["b"][None, :]


def linear_jvp_bad_b(primals, tangents):  # planted bug: forgets the bias tangent
    (p, x), (tp, tx) = primals, tangents
    return tx @ p["W"] + x @ tp["W"]


def _batch(dtype, n=2):
    k1, k2 = jax.random.split(jax.random.key(0))
    p = {"W": jax.random.normal(k1, (n, 3, 2), dtype), "b": jnp.full((n, 2), 0.1, dtype)}
    x = jax.random.normal(k2, (n, 4, 3), dtype)
    return p, x


def _leaf(res, tree_path):
    lay = res.layout
    i = lay.paths.index(tree_path)
    return np.asarray(jax.tree_util.tree_leaves(res.leaf_passed)[i])


@pytest.mark.parametrize("bad", [False, True])
def test_check_vjp(dtype, transform, bad):
    p, x = _batch(dtype)
    rule = linear_vjp_bad_x if bad else linear_vjp
    res = transform(lambda px: jgc.check_vjp(linear, rule, *px, key=jax.random.key(1)), (p, x))
    assert res.kind == "check_vjp"
    assert res.layout.paths == ("[0]['W']", "[0]['b']", "[1]")
    np.testing.assert_array_equal(res.passed, not bad)
    np.testing.assert_array_equal(_leaf(res, "[1]"), not bad)
    np.testing.assert_array_equal(_leaf(res, "[0]['W']"), True)
    np.testing.assert_array_equal(_leaf(res, "[0]['b']"), True)
    if bad:
        np.testing.assert_array_less(0.1, res.rel_error)


@pytest.mark.parametrize("bad", [False, True])
def test_check_jvp(dtype, transform, bad):
    p, x = _batch(dtype)
    rule = linear_jvp_bad_b if bad else linear_jvp
    res = transform(lambda px: jgc.check_jvp(linear, rule, *px, key=jax.random.key(1)), (p, x))
    assert res.kind == "check_jvp"
    assert res.layout.paths == ("out ← [0]['W']", "out ← [0]['b']", "out ← [1]")
    assert res.layout.shapes[0] == (2, 4, 2)  # (tangent, *output shape)
    np.testing.assert_array_equal(res.passed, not bad)
    np.testing.assert_array_equal(_leaf(res, "out ← [0]['b']"), not bad)
    np.testing.assert_array_equal(_leaf(res, "out ← [0]['W']"), True)
    np.testing.assert_array_equal(_leaf(res, "out ← [1]"), True)
    # leaves × tangents × central, the same again where the step 2h was needed, the noise probe and f(θ)
    probes = 3 * 2
    first = jax.tree_util.tree_map(lambda a: np.asarray(a).reshape((-1,) + np.shape(a)[np.ndim(res.passed) :])[0], res)
    fixed = fixed_evals(first, chunk=jgc._engine.chunk_size(N_PRIMAL, probes + 1, 2))
    spent = int(first.num_evals) - int(first.resolve_evals)
    assert fixed + 2 * probes <= spent <= fixed + 4 * probes, (spent, fixed)


def test_jvp_names_output_leaf_of_a_dict_output():
    def f(x, y):
        return {"s": jnp.sin(x) * y, "c": jnp.cos(x)}

    def jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return {"s": jnp.cos(x) * y * tx + jnp.sin(x) * ty, "c": jnp.sin(x) * tx}  # bug: sign of d cos

    res = jgc.check_jvp(f, jvp, jnp.arange(3.0), jnp.ones(3), key=jax.random.key(0))
    failing = [p for p, ok in zip(res.layout.paths, jax.tree_util.tree_leaves(res.leaf_passed), strict=True) if not ok]
    assert failing == ["out['c'] ← [0]"]
    assert "✗ out['c'] ← [0]" in res.report()


def test_vjp_report_and_float64_tolerance():
    with jax.enable_x64(True):
        p, x = _batch(jnp.float64, 1)
        p, x = jax.tree_util.tree_map(lambda a: a[0], (p, x))
        res = jgc.check_vjp(linear, linear_vjp, p, x, key=jax.random.key(3))
        assert float(res.rel_error) < 1e-8
        report = jgc.check_vjp(linear, linear_vjp_bad_x, p, x, key=jax.random.key(3)).report()
    assert report.startswith("jgc check_vjp FAILED")
    assert "f evaluations" in report
    assert re.search(r"✗ \[1\] ", report)


def test_vjp_rule_structure_errors():
    p, x = jax.tree_util.tree_map(lambda a: a[0], _batch(jnp.float32))
    with pytest.raises(ValueError, match=re.escape("vjp_fn returned a pytree whose structure differs from the primals")):
        jgc.check_vjp(linear, lambda primals, c: (primals[0],), p, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("vjp_fn output [1]: shape (3, 4) != primal shape (4, 3)")):
        jgc.check_vjp(linear, lambda pr, c: ({"W": pr[0]["W"], "b": pr[0]["b"]}, pr[1].T), p, x, key=jax.random.key(0))
    with pytest.raises(TypeError, match=re.escape("key must be a PRNG key, e.g. jax.random.key(0); received NoneType")):
        jgc.check_vjp(linear, linear_vjp, p, x, key=None)
    with pytest.raises(TypeError, match=re.escape("f output['i'] is int32; expected floating-point arrays only")):
        jgc.check_vjp(lambda a: {"i": jnp.zeros(2, jnp.int32)}, linear_vjp, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("jvp_fn returned a pytree whose structure differs from the output of f")):
        jgc.check_jvp(linear, lambda pr, t: (t[1],), p, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("num_tangents must be a positive int; received 0")):
        jgc.check_jvp(linear, linear_jvp, p, x, key=jax.random.key(0), num_tangents=0)


def test_integer_primal_is_not_checked():
    def take(w, idx):
        return w[idx] ** 2

    def vjp(primals, c):
        w, idx = primals
        return jnp.zeros_like(w).at[idx].add(2 * w[idx] * c), None

    res = jgc.check_vjp(take, vjp, jnp.array([1.0, 2.0, 3.0]), jnp.array([2, 0]), key=jax.random.key(0))
    assert bool(res.passed)
    assert res.layout.checked == (True, False)
    assert "not checked (not floating point): [1] (int32)" in res.report()
