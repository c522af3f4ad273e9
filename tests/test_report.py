"""The text report, worst(k), and batched reports."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc


def _quad(scale):
    """loss = Σ_k Σ scale_k·w_k²; the gradient is exact, and `scale` lets a test break one leaf."""

    def loss(p):
        return sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(p))

    def grad(p):
        return jax.tree_util.tree_map(lambda v, s: 2 * v * s, p, scale)

    return loss, grad


def test_failing_report_lists_failing_leaf_first_with_worst_index():
    p = {"a": jnp.arange(6.0).reshape(2, 3) / 5, "b": jnp.ones(4), "c": jnp.linspace(-1, 1, 3)}
    loss, grad = _quad({"a": 1.0, "b": 1.0, "c": 1.0})
    bad = lambda q: {**grad(q), "c": grad(q)["c"].at[2].set(5.0)}
    res = jgc.check_grad(loss, bad, p)
    lines = [line for line in res.report().splitlines() if not line.startswith("note:")]
    # the verdict says what failed, never "FAILED" next to "<= tol"
    assert lines[0].startswith("jgc check_grad FAILED: ['c'] differ beyond the noise (proven error ")
    assert f"(central, eps 3.0e-03, float32, 13 coordinates, {int(res.num_evals)} loss evaluations)" in lines[0]
    assert "<=" not in lines[0]
    assert lines[1].split()[:5] == ["leaf", "shape", "rel_error", "proven", "possible"]
    # proven and possible are relative, like rel_error; ± bound is absolute, like numeric and analytic
    assert re.match(r"✗ \['c'\]\s+\(3,\)\s+\S+\s+\S+\s+\S+\s+\(2,\)\s+2\.0000e\+00\s+5\.0000e\+00", lines[2])
    assert sorted(line.split()[0] for line in lines[3:5]) == ["['a']", "['b']"]


def test_passing_float64_report_has_no_marks_and_no_float32_note():
    with jax.enable_x64(True):
        p = {"w": jnp.linspace(-1.0, 1.0, 4)}
        loss, grad = _quad({"w": 1.0})
        res = jgc.check_grad(loss, grad, p)
        text = str(res)
        assert text.startswith("jgc check_grad passed: every leaf agrees within tol 1.0e-06 (largest possible error ")
        assert "float64" in text and "✗" not in text and "?" not in text and "float32" not in text
        assert repr(res).startswith("GradCheck(passed: every leaf agrees")


def test_worst_returns_largest_discrepancies_in_order():
    p = {"a": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    loss, grad = _quad({"a": 1.0, "b": 1.0})
    bad = lambda q: {"a": q["a"].at[1, 0].set(0.5), "b": q["b"].at[2].set(-3.0)}
    res = jgc.check_grad(loss, bad, p)
    top = res.worst(2)
    assert [(c.path, c.index) for c in top] == [("['b']", (2,)), ("['a']", (1, 0))]
    assert top[0].numeric == pytest.approx(0.0, abs=1e-6) and top[0].analytic == -3.0
    assert top[0].seed is None
    assert len(res.worst(100)) == 7


def test_many_leaves_stay_readable():
    p = {f"layer{i:03d}": jnp.full(3, 0.1 * (i % 7)) for i in range(60)}
    loss, grad = _quad({k: 1.0 for k in p})
    scale = {k: (1.0 if k != "layer043" else 3.0) for k in p}
    res = jgc.check_grad(loss, _quad(scale)[1], p)
    text = res.report()
    lines = text.splitlines()
    assert len(lines) < 50
    rows = [line for line in lines if line[:1] in "✗? " and "['layer" in line]
    assert rows[0].startswith("✗ ['layer043']") and not any(r.startswith("✗") for r in rows[1:])
    assert "… 19 more passing leaves" in text and "report(max_leaves=None) shows all" in text
    assert res.report().count("?") == 0  # unresolved leaves were re-measured with better steps
    assert len([line for line in res.report(max_leaves=None).splitlines() if line.startswith(("  ['layer", "✗ ['layer"))]) == 60


def test_batched_report_counts_failures_and_shows_worst_seed():
    loss, grad = _quad({"w": 1.0})
    scales = jnp.array([1.0, 1.0, 2.0, 1.0, 1.5])
    p = {"w": jnp.ones((5, 3))}

    def one(q, s):
        return jgc.check_grad(loss, lambda r: {"w": 2 * r["w"] * s}, q)

    res = jax.vmap(one)(p, scales)
    text = res.report()
    assert text.startswith("jgc batched check over 5 seeds (batch shape (5,)): 2 FAILED (seeds 2, 4)")
    assert "worst seed 2:" in text
    assert "✗ ['w']" in text
    assert res.worst(1)[0].seed == 2
    assert "2 of 5 checks failed" in repr(res)


def test_report_inside_jit_does_not_crash():
    loss, grad = _quad({"w": 1.0})

    def f(q):
        res = jgc.check_grad(loss, grad, q)
        assert "traced" in res.report()
        assert "traced" in repr(res)
        with pytest.raises(TypeError, match=re.escape("worst() needs concrete values")):
            res.worst()
        return res.rel_error

    jax.jit(f)({"w": jnp.ones(2)})


def test_nonfinite_count_in_report():
    loss = lambda q: jnp.sum(q["w"])
    res = jgc.check_grad(loss, lambda q: {"w": q["w"].at[1].set(jnp.nan).at[3].set(jnp.inf)}, {"w": jnp.ones(4)})
    row = [line for line in res.report().splitlines() if line.startswith("✗")][0]
    assert "2 non-finite" in row and "(1,)" in row
    assert not np.isfinite(float(res.rel_error))
    assert res.report().startswith("jgc check_grad FAILED: non-finite values in ['w']")
