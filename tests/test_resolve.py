"""Resolution on concrete inputs: what the first measurement leaves unresolved is re-measured
(float64 for a float32 check; otherwise adapted steps); under a trace it stays inconclusive."""

import jax
import jax.numpy as jnp
import numpy as np
from corpus import MODELS

import jgc
from jgc import _jaxpr

BY_NAME = {m.name: m for m in MODELS}


def test_float64_recheck_proves_a_bug_below_float32s_floor():
    # log(1 − sigmoid(z) + ε) rounds at ~8e-6 of the loss in float32: a bug of relative size
    # 1.4e-4 is below float32's fail floor (ρ^(2/3) ≈ 4e-4). The float64 re-check measures it
    # with float64's rounding, and the failure floor of the re-checked leaves follows.
    m = BY_NAME["bce_log_eps"]
    params, args = m.init(jax.random.key(1), jnp.float32)
    bad, leaf = m.bugs["log_eps_omitted"]
    res = jgc.check_grad(m.loss_fn, bad, params, *args)
    assert res.status == "failed", res.report()
    assert any(n.startswith("float64 re-check of") for n in res.notes) and res.resolve_evals > 0
    assert bool(jax.tree.leaves(res.leaf_failed)[res.layout.paths.index(leaf)])  # and it names the wrong leaf
    # the same check under jit cannot re-measure: inconclusive, never a pass
    traced = jax.jit(lambda p: jgc.check_grad(m.loss_fn, bad, p, *args))(params)
    assert traced.status == "inconclusive"
    assert jgc.check_grad(m.loss_fn, m.grad_fn, params, *args).status == "passed"


def test_adapted_steps_resolve_a_step_too_large():
    # float64 with a user-forced eps = 1e-2: truncation (~h²·f'''/6) hides an error of tol
    # 1e-6. The step ladder re-measures with a step fitted to the estimated truncation and
    # rounding, which resolves it both ways; under jit the check stays inconclusive.
    with jax.enable_x64(True):
        f = lambda p: jnp.sum(jnp.sin(3 * p))  # noqa: E731
        g = lambda p: 3 * jnp.cos(3 * p)  # noqa: E731
        p = jnp.linspace(-0.3, 1.1, 5)
        res = jgc.check_grad(f, g, p, eps=1e-2)
        assert res.status == "passed", res.report()
        assert res.notes[0] == "unresolved entries of params re-measured with adapted steps", res.notes
        assert res.resolve_evals == 20 and int(res.num_evals) > res.resolve_evals  # 5 probes at h' and 2h'
        assert jax.jit(lambda p: jgc.check_grad(f, g, p, eps=1e-2))(p).status == "inconclusive"
        bad = jgc.check_grad(f, lambda p: g(p) * (1 + 1e-5), p, eps=1e-2)
        assert bad.status == "failed", bad.report()


def test_no_float64_recheck_when_the_loss_keeps_float32():
    # a loss that casts to float32 cannot be re-checked in float64: the report says so, the
    # tolerance is float32's own (1e-2, not the 1e-4 a float64 re-check guarantees), adapted
    # float32 steps are tried, and what they cannot resolve stays inconclusive with the remedy
    f = lambda p: jnp.sum(p.astype(jnp.float32) ** 2) + 3e3  # noqa: E731
    p = 0.7 * jnp.array([0.31, -0.72, 0.55, 0.93, -0.18, 0.64], jnp.float32)
    res = jgc.check_grad(f, lambda p: 2 * p, p)
    assert res.notes[:2] == (
        "no float64 re-check: loss_fn does not return float64 for float64 inputs; tol 1e-02",
        "unresolved entries of params re-measured with adapted steps",
    )
    assert int(res.run.recheck) == 2  # loss_fn does not return float64
    assert res.status == "inconclusive" and res.tol == jnp.float32(1e-2)
    assert "make loss_fn and grad_fn follow their inputs' dtype" in res.report()
    bad = jgc.check_grad(f, lambda p: 2.4 * p, p)  # 20% off: proven whatever the tolerance
    assert bad.status == "failed"


def test_vjp_jvp_hvp_and_locate_resolve_like_check_grad():
    """The vector checks and locate take the same passes: open leaves re-measured in float64,
    failures confirmed at a second step."""
    f = lambda W, x: 3e3 + jnp.tanh(W @ x)  # noqa: E731  (the offset's rounding hides 1e-4 from float32)
    W = jax.random.normal(jax.random.key(0), (3, 4), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (4,), jnp.float32)

    def jvp(primals, tangents):
        (W, x), (dW, dx) = primals, tangents
        return (1 - jnp.tanh(W @ x) ** 2) * (dW @ x + W @ dx)

    def vjp(primals, c):
        W, x = primals
        g = c * (1 - jnp.tanh(W @ x) ** 2)
        return jnp.outer(g, x), W.T @ g

    key = jax.random.key(2)
    for res in (jgc.check_jvp(f, jvp, W, x, key=key), jgc.check_vjp(f, vjp, W, x, key=key)):
        assert res.status == "passed", res.report()
        assert res.tol == jnp.float32(1e-4) and int(res.run.recheck) == 1, res.report()  # float32's tol via float64
    bad_jvp = lambda p, t: jvp(p, t) * 1.01  # noqa: E731
    res = jgc.check_jvp(f, bad_jvp, W, x, key=key)
    assert res.status == "failed" and (np.asarray(res.run.how) & 4).any(), res.report()  # confirmed

    loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + 3e3  # noqa: E731
    hvp = lambda p, v: {"w": 2 * jnp.cos(2 * p["w"]) * v["w"]}  # noqa: E731
    p = {"w": jnp.linspace(0.1, 1.3, 5, dtype=jnp.float32)}
    res = jgc.check_hvp(loss, hvp, p)
    assert res.status == "passed" and res.tol == jnp.float32(1e-4), res.report()
    bad = jgc.check_hvp(loss, lambda p, v: {"w": hvp(p, v)["w"].at[2].multiply(1.01)}, p)
    assert bad.status == "failed" and (np.asarray(bad.run.how) & 4).any(), bad.report()

    w = jnp.linspace(-1.0, 1.0, 4000, dtype=jnp.float32)
    found = jgc.locate(lambda p: jnp.sum(jnp.sin(p) * p), lambda p: (jnp.cos(p) * p + jnp.sin(p)).at[1234].add(10.0), w, key=key)
    assert [c.index for c in found.wrong] == [(1234,)] and found.complete and found.resolve_evals > 0


# ------------------------------------------------------------------ the term scale, where a check did not pass


def _saturated(p, x):
    return -jnp.sum(jnp.log(1 - jax.nn.sigmoid(p["w"] * x)))  # at w·x = 32, 1 − q ~ 1e-14: ~60 ulps of q


def _saturated_grad(p, x, wrong=1.0):
    return {"w": wrong * jnp.sum(jax.nn.sigmoid(p["w"] * x) * x)[None] * jnp.ones_like(p["w"])}


def test_term_scale_only_where_a_check_did_not_pass(monkeypatch):
    """On concrete inputs the term scale's reverse pass is compiled only for a check that did not
    pass at the measured level; a saturated sigmoid, whose rounding no noise table sees (1 − q is
    constant over them), then runs once more at the level it sets: never failed when right,
    failed when wrong."""
    calls = []
    real = _jaxpr.term_scale
    monkeypatch.setattr(_jaxpr, "term_scale", lambda *a: calls.append(1) or real(*a))
    with jax.enable_x64(True):
        p, x = {"w": jnp.array([1.0])}, jnp.array([32.0])  # without the second run: failed, level 3.6e-15
        smooth = jgc.check_grad(lambda p, x: jnp.sum(jnp.sin(p["w"] * x)), lambda p, x: {"w": x * jnp.cos(p["w"] * x)}, p, x)
        assert smooth.status == "passed" and calls == []
        right = jgc.check_grad(_saturated, _saturated_grad, p, x)
        assert len(calls) == 1 and right.status != "failed", right.report()
        assert float(right.noise.level) >= 1e-6 * abs(float(right.noise.center))  # the term scale's level, not the tables'
        wrong = jgc.check_grad(_saturated, lambda p, x: _saturated_grad(p, x, 2.0), p, x)
        assert wrong.status == "failed" and bool(wrong.leaf_failed["w"]), wrong.report()
