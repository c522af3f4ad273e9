"""check_grad, numeric_grad, relative_error, assert_grad: values, transforms, dtypes."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import LAM, evals, forgot_l2, mlp_data, mlp_grad, mlp_grad_bug, mlp_init, mlp_loss, mlp_loss_bug, planted

import jgc


@functools.partial(jax.jit, static_argnums=(0, 1))
def _batch(dtype, n=2):
    """n stacked MLP initialisations and one batch of data (jitted: eager ops compile one by one)."""
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    params = jax.vmap(lambda k: mlp_init(k, dtype))(keys)
    x, y = mlp_data(jax.random.PRNGKey(1), dtype)
    return params, x, y


def test_correct_gradient_passes(dtype, transform):
    params, x, y = _batch(dtype)
    res = transform(lambda p: jgc.check_grad(mlp_loss, mlp_grad, p, x, y), params)
    assert res.passed.all(), res.report()
    assert (res.rel_error < (1e-8 if dtype == jnp.float64 else 1e-3)).all()
    n = 3 * 4 + 4 + 4 * 2 + 2
    # the noise probe, J(θ), the first chunk twice, 2n, 2 more where 2h was needed, and what resolution cost
    assert (res.num_evals == evals(res)).all()
    assert (res.noise.doubled.sum(axis=-1) < n).all()  # the doubled step only where it can change the verdict
    # float32 on concrete inputs aims at tol 1e-4: what stays unresolved is re-measured (in float64,
    # else with adapted steps), counted, and the report says so; in float64 and under a trace nothing is
    resolved = [n for n in res.notes if "re-measured" in n or "float64 re-check" in n]
    assert bool((res.resolve_evals > 0).any()) == bool(resolved), res.notes
    if dtype == jnp.float64 or transform.name != "plain":
        assert (res.resolve_evals == 0).all()
    assert res.rel_error.dtype == dtype


# (leaf number in tree order, flat index, path, index): every leaf of the 3-4-2 MLP
BUGS = [
    (0, 6, "['layers'][0]['W']", (1, 2)),
    (1, 3, "['layers'][0]['b']", (3,)),
    (2, 1, "['layers'][1]['W']", (0, 1)),
    (3, 1, "['layers'][1]['b']", (1,)),
]


@pytest.mark.parametrize(("leaf", "flat", "path", "index"), BUGS)
def test_planted_bug_fails_and_names_leaf(dtype, transform, leaf, flat, path, index):
    params, x, y = _batch(dtype)
    bug = jnp.array([leaf, flat])
    res = transform(lambda p: jgc.check_grad(mlp_loss_bug, mlp_grad_bug, p, x, y, bug), params)
    assert not res.passed.any() and res.failed.all()
    failing = [p for p, bad in zip(res.layout.paths, jax.tree_util.tree_leaves(res.leaf_failed)) if bad.any()]
    assert failing == [path]
    # the other leaves pass firmly (float32 on the host: resolved to tol 1e-4 by adapted steps and float64)
    assert all(ok.all() for p, ok in zip(res.layout.paths, jax.tree_util.tree_leaves(res.leaf_passed)) if p != path)
    worst = res.worst(1)[0]
    assert (worst.path, worst.index) == (path, index)
    assert worst.analytic == pytest.approx(2 * worst.numeric, rel=1e-2)


def test_forgotten_regularization_fails_on_every_weight(dtype):
    params, x, y = _batch(dtype, 1)
    p = jax.tree_util.tree_map(lambda v: v[0], params)
    res = jgc.check_grad(mlp_loss, forgot_l2, p, x, y)
    assert not res.passed
    ok = dict(zip(res.layout.paths, map(bool, jax.tree_util.tree_leaves(res.leaf_passed))))
    assert ok == {
        "['layers'][0]['W']": False,
        "['layers'][0]['b']": True,
        "['layers'][1]['W']": False,
        "['layers'][1]['b']": True,
    }
    assert not any(map(bool, jax.tree_util.tree_leaves(res.leaf_failed)[1::2]))
    # The discrepancy on W is exactly the forgotten term LAM·W.
    diff = res.numeric["layers"][0]["W"] - res.analytic["layers"][0]["W"]
    np.testing.assert_allclose(
        diff, LAM * p["layers"][0]["W"], rtol=1e-2 if dtype == jnp.float32 else 1e-6, atol=1e-3 if dtype == jnp.float32 else 1e-9
    )


def test_vmap_matches_python_loop():
    """Every field of a vmapped check equals the single check of the same seed.

    Batched and single evaluations of the loss may round differently (another reduction
    order); finite differences turn that into ~ulp·|J|/h ≈ 1e-10 here, so values are
    compared to 1e-9 and verdicts exactly.
    """
    with jax.enable_x64(True):
        params, x, y = _batch(jnp.float64, 4)
        batched = jax.vmap(lambda p: jgc.check_grad(mlp_loss, mlp_grad, p, x, y))(params)
        for i in range(4):
            single = jgc.check_grad(mlp_loss, mlp_grad, jax.tree_util.tree_map(lambda v, i=i: v[i], params), x, y)
            # what each run did (which path the probes took: "traced" under vmap) is compared apart
            strip = lambda r: dataclasses.replace(r, run=dataclasses.replace(r.run, paths=r.run.how))  # noqa: E731
            for a, b in zip(jax.tree_util.tree_leaves(strip(single)), jax.tree_util.tree_leaves(strip(batched))):
                if np.asarray(a).dtype == bool:
                    np.testing.assert_array_equal(np.asarray(b)[i], np.asarray(a))
                else:
                    np.testing.assert_allclose(np.asarray(b)[i], np.asarray(a), rtol=1e-6, atol=1e-9)


def test_numeric_grad_matches_autodiff(dtype):
    params, x, y = _batch(dtype, 1)
    p = jax.tree_util.tree_map(lambda v: v[0], params)
    num = jgc.numeric_grad(mlp_loss, p, x, y)
    exact = jax.grad(mlp_loss)(p, x, y)
    assert jax.tree_util.tree_structure(num) == jax.tree_util.tree_structure(p)
    rel = float(jgc.relative_error(num, exact))
    assert rel < (1e-9 if dtype == jnp.float64 else 1e-3)


@pytest.mark.parametrize("method", ["central", "forward", "five_point"])
def test_methods_agree_and_count_evaluations(method):
    with jax.enable_x64(True):
        params, x, y = _batch(jnp.float64, 1)
        p = jax.tree_util.tree_map(lambda v: v[0], params)
        res = jgc.check_grad(mlp_loss, mlp_grad, p, x, y, method=method)
        assert res.passed, res.report()
        m = {"central": 2, "forward": 1, "five_point": 4}[method]
        assert int(res.num_evals) == evals(res, m)
        assert res.method == method


def test_grad_fn_none_checks_jax_grad():
    with jax.enable_x64(True):
        params, x, y = _batch(jnp.float64, 1)
        p = jax.tree_util.tree_map(lambda v: v[0], params)
        res = jgc.check_grad(mlp_loss, None, p, x, y)
        assert res.passed and float(res.rel_error) < 1e-8
        exact = jax.grad(mlp_loss)(p, x, y)
        np.testing.assert_allclose(res.analytic["layers"][1]["W"], exact["layers"][1]["W"], rtol=1e-14)


def test_chunk_size_does_not_change_the_answer():
    with jax.enable_x64(True):
        params, x, y = _batch(jnp.float64, 1)
        p = jax.tree_util.tree_map(lambda v: v[0], params)
        ref = jgc.numeric_grad(mlp_loss, p, x, y)
        # n = 26: chunks of 3 → 9 equal chunks of 3 (one padding probe), chunks of 7 → 4 of 7 (two);
        # padding is not counted, so num_evals depends on the chunking only through the determinism
        # check (the first chunk evaluated twice)
        counts = set()
        for chunk in (1, 3, 7, 1000):
            res = jgc.check_grad(mlp_loss, mlp_grad, p, x, y, chunk_size=chunk)
            assert int(res.num_evals) == evals(res, chunk=chunk)
            counts.add(int(res.num_evals) - 2 * min(chunk, 33 + 26))
            got = jgc.numeric_grad(mlp_loss, p, x, y, chunk_size=chunk)
            # another batch shape lets XLA sum the loss in another order: one ulp of J, over 2h
            atol = 8 * np.finfo(np.float64).eps * max(1.0, abs(float(mlp_loss(p, x, y)))) / (2 * float(res.eps))
            for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
                np.testing.assert_allclose(a, b, rtol=0, atol=atol)
        assert len(counts) == 1


def test_steps_scale_with_parameter_and_are_exact():
    """Coordinate j is stepped by eps·max(1, |θ_j|): exact on a quadratic in any scale."""
    with jax.enable_x64(True):
        for v in (1e-3, 0.5, 3.0, -250.0, 1e4):  # one at a time: a sum would add rounding of the big terms
            g = jgc.numeric_grad(lambda t: jnp.sum(t**2), jnp.array([v]), eps=1e-3)
            np.testing.assert_allclose(g, [2 * v], rtol=1e-12)
    for v in (0.3, 3.7, -1e3):
        g32 = jgc.numeric_grad(lambda t: jnp.sum(t**2), jnp.array([v], jnp.float32))
        np.testing.assert_allclose(g32, [2 * v], rtol=1e-5)


def test_relative_error_formula():
    a = {"x": jnp.array([3.0, 0.0]), "y": jnp.array(4.0)}
    b = {"x": jnp.array([0.0, 0.0]), "y": jnp.array(0.0)}
    assert float(jgc.relative_error(a, b)) == pytest.approx(1.0)
    c = {"x": jnp.array([3.0, 1.0]), "y": jnp.array(4.0)}
    # ‖a−c‖ = 1, ‖a‖ = 5, ‖c‖ = √26
    assert float(jgc.relative_error(a, c)) == pytest.approx(1 / (5 + np.sqrt(26)), rel=1e-6)
    assert float(jgc.relative_error(b, b)) == 0.0
    with pytest.raises(ValueError, match=re.escape("['x']: shapes differ, (2,) and (3,).")):
        jgc.relative_error(a, {"x": jnp.zeros(3), "y": jnp.array(0.0)})


def test_zero_gradient_is_a_pass_not_nan():
    res = jgc.check_grad(lambda p: jnp.sum(p * 0.0), lambda p: jnp.zeros_like(p), jnp.ones(3))
    assert float(res.rel_error) == 0.0 and bool(res.passed)


def test_small_wrong_leaf_is_not_hidden_by_large_ones():
    """A wrong 1-element leaf fails even when it barely moves the global relative error.

    In float64 the small coordinate is measurable (rounding noise ~ 1e-16·|J|/h ≈ 1e-5 ≪ 2e-2),
    so the wrong value must be reported although the global error stays under tol.
    """

    def loss(p):
        return 1e3 * jnp.sum(p["big"] ** 2) + 2e-2 * p["small"][0]

    def grad(p):
        return {"big": 2e3 * p["big"], "small": jnp.array([4e-2])}  # should be 2e-2

    with jax.enable_x64(True):
        p = {"big": jnp.linspace(1.0, 2.0, 50), "small": jnp.array([0.5])}
        res = jgc.check_grad(loss, grad, p)
        assert float(res.rel_error) < float(res.tol)  # the global number alone would pass
        assert not bool(res.passed)
        assert not bool(res.leaf_passed["small"]) and bool(res.leaf_passed["big"])
        fixed = jgc.check_grad(loss, lambda q: {"big": 2e3 * q["big"], "small": jnp.array([2e-2])}, p)
        assert bool(fixed.passed), fixed.report()


def test_integer_and_static_leaves_are_passed_through_and_not_checked():
    def loss(p, x):
        assert p["mode"] == "train"  # a non-array leaf arrives unchanged
        return jnp.sum(jnp.sin(p["w"] * x)) * p["n"]

    def grad(p, x):
        return {"w": x * jnp.cos(p["w"] * x) * p["n"], "n": None, "mode": None}

    p = {"w": jnp.array([0.1, 0.2]), "n": jnp.array(3, jnp.int32), "mode": "train"}
    res = jgc.check_grad(loss, grad, p, jnp.array([1.0, 2.0]))
    assert bool(res.passed)
    assert res.layout.checked == (False, False, True)  # sorted keys: mode, n, w
    assert np.isnan(res.numeric["n"]) and np.isnan(res.leaf_rel_error["n"])
    assert "not checked (not floating point): ['mode'] (str), ['n'] (int32)" in res.report()


def test_python_float_leaf_is_checked():
    res = jgc.check_grad(lambda p: p["a"] ** 3, lambda p: {"a": 3 * p["a"] ** 2}, {"a": 1.5})
    assert bool(res.passed) and res.layout.checked == (True,)


def test_assert_grad_returns_or_raises_with_report():
    params, x, y = _batch(jnp.float32, 1)
    p = jax.tree_util.tree_map(lambda v: v[0], params)
    res = jgc.assert_grad(mlp_loss, mlp_grad, p, x, y)
    assert isinstance(res, jgc.GradCheck)
    with pytest.raises(jgc.GradCheckError, match=re.escape("✗ ['layers'][1]['b']")) as info:
        jgc.assert_grad(mlp_loss, planted(mlp_grad, 1, "b", (0,)), p, x, y)
    assert isinstance(info.value, AssertionError)
    assert "FAILED" in str(info.value)


def test_inputs_not_mutated_and_x64_left_alone():
    p = {"w": np.array([0.5, -1.0, 2.0], np.float32)}
    before = p["w"].copy()
    x64 = jax.config.jax_enable_x64
    jgc.check_grad(lambda q: jnp.sum(q["w"] ** 2), lambda q: {"w": 2 * q["w"]}, p)
    np.testing.assert_array_equal(p["w"], before)
    assert jax.config.jax_enable_x64 == x64


def test_nan_in_loss_fails_and_names_leaf_and_index():
    def loss(p):
        return jnp.sum(jnp.sqrt(p["w"]))  # at w = 0: sqrt(-h) is NaN, 0.5/sqrt(0) is inf

    def grad(p):
        return {"w": 0.5 / jnp.sqrt(p["w"])}

    res = jgc.check_grad(loss, grad, {"w": jnp.array([1.0, 4.0, 0.0])})
    assert not bool(res.passed)
    assert np.isnan(res.numeric["w"][2]) and np.isinf(res.analytic["w"][2])
    assert np.isfinite(res.numeric["w"][:2]).all()
    report = res.report()
    assert "✗ ['w']" in report and "(2,)" in report and "non-finite" in report
    assert res.worst(1)[0][1:3] == ("['w']", (2,))


def test_inf_in_analytic_fails():
    res = jgc.check_grad(lambda p: jnp.sum(p), lambda p: p.at[1].set(jnp.inf), jnp.ones(3))
    assert not bool(res.passed)
    assert res.worst(1)[0].index == (1,)


def test_mixed_precision_leaves():
    with jax.enable_x64(True):
        p = {"a": jnp.array([1.0, 2.0], jnp.float32), "b": jnp.array([0.5], jnp.float64)}
        loss = lambda q: jnp.sum(q["a"].astype(jnp.float64) ** 2) * q["b"][0]
        grad = lambda q: {"a": (2 * q["a"] * q["b"][0].astype(jnp.float32)), "b": jnp.sum(q["a"].astype(jnp.float64) ** 2)[None]}
        res = jgc.check_grad(loss, grad, p)
        assert bool(res.passed), res.report()
        assert res.layout.dtype == jnp.float64 and res.layout.low_dtype == jnp.float32
        # defaults follow the least precise leaf: float32's, on concrete inputs the tolerance that
        # its float64 re-check of unresolved leaves guarantees
        assert float(res.tol) == jgc._stencils.RECHECKED_TOL == 1e-4


def test_numeric_grad_under_transforms(dtype, transform):
    params, x, y = _batch(dtype)
    num = transform(lambda p: jgc.numeric_grad(mlp_loss, p, x, y), params)
    exact = jax.vmap(lambda p: jax.grad(mlp_loss)(p, x, y))(params)
    for a, b in zip(jax.tree_util.tree_leaves(num), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(
            a[0], b[0], rtol=1e-2 if dtype == jnp.float32 else 1e-6, atol=1e-4 if dtype == jnp.float32 else 1e-10
        )
