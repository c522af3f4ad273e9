"""Every check under the JAX flags research code runs with: the verdict is right, and no flag changes.

The full matrix (every flag × every check, a correct and a wrong gradient) is in the slow tier; the
default tier runs each flag once and each check once (a diagonal of the matrix), plus the flags
that need more than a verdict: disable_jit's verdict equals the jitted one, the transfer guard
sees no implicit transfer, x64 flipped between checks.
"""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

# ---------------------------------------------------------------- the model (linear in W: exact central differences)

P = {"W": jnp.array([[0.3, -1.2, 0.7], [0.5, 0.1, -0.4]]), "b": jnp.array([0.5, 2.0])}
X = jnp.array([1.0, 2.0, -0.5])


def loss(p, x):
    return jnp.sum(jnp.dot(p["W"], x)) + 0.5 * jnp.sum(p["b"] ** 2)


def good(p, x):  # in the params' dtype (float64 ones from init under x64, float32 data)
    return {"W": jnp.broadcast_to(x, p["W"].shape).astype(p["W"].dtype), "b": p["b"]}


def bad(p, x):  # the bias term's gradient off by a factor of 2
    return {"W": jnp.broadcast_to(x, p["W"].shape).astype(p["W"].dtype), "b": 2 * p["b"]}


def init(key):
    k1, k2 = jax.random.split(key)
    return {"W": jax.random.normal(k1, (2, 3)), "b": jax.random.normal(k2, (2,))}


def layer(W, x):
    return jnp.dot(W, x)


def layer_vjp(primals, c):
    W, x = primals
    return jnp.outer(c, x), jnp.dot(W.T, c)


def layer_bad_vjp(primals, c):
    W, x = primals
    return 2 * jnp.outer(c, x), jnp.dot(W.T, c)


def _status(res):
    return res.status


CHECKS = {
    "check_grad": lambda g, key, keys: _status(jgc.check_grad(loss, g, P, X)),
    "check_directions": lambda g, key, keys: _status(jgc.check_directions(loss, g, P, X, key=key, num=2)),
    "locate": lambda g, key, keys: sorted((c.path, c.index) for c in jgc.locate(loss, g, P, X, key=key).wrong),
    "check_seeds": lambda g, key, keys: np.asarray(jgc.check_seeds(loss, g, init, keys, X).passed).tolist(),
    "check_vjp": lambda g, key, keys: _status(
        jgc.check_vjp(layer, layer_vjp if g is good else layer_bad_vjp, P["W"], X, key=key)
    ),
}
EXPECTED = {
    "check_grad": ("passed", "failed"),
    "check_directions": ("passed", "failed"),
    "locate": ([], [("['b']", (0,)), ("['b']", (1,))]),
    "check_seeds": ([True, True], [False, False]),
    "check_vjp": ("passed", "failed"),
}

# ---------------------------------------------------------------- the flags

FLAGS = {
    "disable_jit": {"jax_disable_jit": True},
    "disable_jit_context": "context",  # with jax.disable_jit():
    "debug_nans": {"jax_debug_nans": True},
    "debug_infs": {"jax_debug_infs": True},
    "rank_promotion_raise": {"jax_numpy_rank_promotion": "raise"},
    "transfer_guard_log": {"jax_transfer_guard": "log"},
    "transfer_guard_disallow": {"jax_transfer_guard": "disallow"},
    "matmul_precision_highest": {"jax_default_matmul_precision": "highest"},
    "matmul_precision_bfloat16": {"jax_default_matmul_precision": "bfloat16"},
    "x64": {"jax_enable_x64": True},
    "prng_rbg": {"jax_default_prng_impl": "rbg"},
    "prng_unsafe_rbg": {"jax_default_prng_impl": "unsafe_rbg"},
    "check_tracer_leaks": {"jax_check_tracer_leaks": True},
}
NAMES = sorted({n for f in FLAGS.values() if isinstance(f, dict) for n in f} | {"jax_transfer_guard_host_to_device"})


def _config():
    return {n: getattr(jax.config, n) for n in NAMES}


@contextlib.contextmanager
def flagged(flag):
    """Apply a flag for the block (keys made first, in the PRNG implementation the flag picks and
    before a transfer guard is on); yields (key, keys) and checks that nothing changed the flags."""
    setting = FLAGS[flag]
    before = _config()
    updates = setting if isinstance(setting, dict) else {}
    try:
        if "jax_default_prng_impl" in updates:  # a legacy key of that implementation: uint32 (4,)
            jax.config.update("jax_default_prng_impl", updates["jax_default_prng_impl"])
            key = jax.random.PRNGKey(0)
            assert key.dtype == jnp.uint32 and key.shape == (4,)
        else:
            key = jax.random.key(0)
        keys = jax.random.split(key, 2)
        for name, value in updates.items():
            jax.config.update(name, value)
        applied = _config()
        with jax.disable_jit() if setting == "context" else contextlib.nullcontext():
            yield key, keys
            assert bool(jax.config.jax_disable_jit) == (setting == "context" or "jax_disable_jit" in updates)
        assert _config() == applied, "a check changed a JAX flag"
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
    assert _config() == before


def _run(flag, check):
    with flagged(flag) as (key, keys):
        got = tuple(CHECKS[check](g, key, keys) for g in (good, bad))
    assert got == EXPECTED[check], (flag, check, got)


MATRIX = [(f, c) for f in FLAGS for c in CHECKS]
# the default tier: each flag once, each check at least once (check_seeds, whose vmapped program is
# the costliest to compile, once); disable_jit's eager runs (tens of seconds each) only in the slow
# tier, the default one has test_disable_jit_verdict_equals_the_jitted_one
DIAGONAL = {
    ("debug_nans", "locate"),
    ("debug_infs", "check_directions"),
    ("rank_promotion_raise", "check_grad"),
    ("transfer_guard_log", "check_directions"),
    ("transfer_guard_disallow", "check_seeds"),
    ("matmul_precision_highest", "check_vjp"),
    ("matmul_precision_bfloat16", "check_grad"),
    ("x64", "check_directions"),
    ("prng_rbg", "locate"),
    ("prng_unsafe_rbg", "check_vjp"),
    ("check_tracer_leaks", "check_grad"),
}
assert {f for f, _ in DIAGONAL} == set(FLAGS) - {"disable_jit", "disable_jit_context"} and {c for _, c in DIAGONAL} == set(CHECKS)


@pytest.mark.parametrize(
    "flag,check", [pytest.param(f, c, marks=() if (f, c) in DIAGONAL else pytest.mark.slow) for f, c in MATRIX]
)
def test_flag_check(flag, check):
    _run(flag, check)


# ---------------------------------------------------------------- the other checks


OTHERS = {
    "check_jvp": lambda key: _status(
        jgc.check_jvp(layer, lambda pr, t: jnp.dot(t[0], pr[1]) + jnp.dot(pr[0], t[1]), P["W"], X, key=key)
    ),
    "check_hvp": lambda key: _status(jgc.check_hvp(lambda p: jnp.sum(p**3), lambda p, v: 6 * p * v, P["b"], key=key)),
    "numeric_grad": lambda key: np.asarray(jgc.numeric_grad(loss, P, X)["b"]).round(3).tolist(),
    "sampled": lambda key: _status(jgc.check_grad(loss, good, P, X, coords=3, key=key)),
}
OTHERS_EXPECTED = {"check_jvp": "passed", "check_hvp": "passed", "numeric_grad": [0.5, 2.0], "sampled": "passed"}


@pytest.mark.parametrize(
    "flag,check",
    [
        pytest.param(f, c, marks=() if (f, c) == ("disable_jit_context", "numeric_grad") else pytest.mark.slow)
        for f in FLAGS
        for c in OTHERS
        if not (c == "check_hvp" and f != "disable_jit_context")  # its own cost; once suffices
    ],
)
def test_flag_other_checks(flag, check):
    with flagged(flag) as (key, _):
        assert OTHERS[check](key) == OTHERS_EXPECTED[check]


# ---------------------------------------------------------------- more than a verdict


def _summary(res):
    return (res.status, int(res.num_evals), np.asarray(res.groups.passed).tolist(), np.asarray(res.groups.failed).tolist())


def test_disable_jit_verdict_equals_the_jitted_one():
    jitted = [_summary(jgc.check_grad(loss, g, P, X)) for g in (good, bad)]
    with jax.disable_jit():
        eager = [_summary(jgc.check_grad(loss, g, P, X)) for g in (good, bad)]
    assert eager == jitted
    assert [j[0] for j in jitted] == ["passed", "failed"]


def test_transfer_guard_log_sees_no_implicit_transfer(capfd):
    key = jax.random.key(0)
    x = np.asarray(X)  # host data: jgc puts it on the device itself, explicitly
    capfd.readouterr()
    with jax.transfer_guard("log"):
        assert jgc.check_grad(loss, good, P, x).status == "passed"
        assert jgc.check_directions(loss, bad, P, x, key=key, num=2).status == "failed"
    err = capfd.readouterr().err
    assert "transfer" not in err, err[:2000]


def test_transfer_guard_disallow_explicit_is_named():
    with jax.transfer_guard("disallow_explicit"):
        with pytest.raises(RuntimeError, match=re.escape("jax_transfer_guard forbids a transfer that a gradient check")) as e:
            jgc.check_grad(loss, good, P, X)
    assert "'disallow' and 'log' allow explicit transfers" in str(e.value)


def test_x64_flipped_between_checks():
    before = jax.config.jax_enable_x64
    try:
        for x64 in (False, True, False, True):
            jax.config.update("jax_enable_x64", x64)
            dtype = jnp.float64 if x64 else jnp.float32
            p = jax.tree_util.tree_map(lambda v, dtype=dtype: jnp.asarray(v, dtype), P)
            res = [jgc.check_grad(loss, g, p, X.astype(dtype)) for g in (good, bad)]
            assert [r.status for r in res] == ["passed", "failed"]
            assert res[0].numeric_flat.dtype == dtype
            assert jax.config.jax_enable_x64 == x64
    finally:
        jax.config.update("jax_enable_x64", before)


def test_transfer_guard_disallow_host_side_helpers():
    res = jgc.check_seeds(loss, good, init, jax.random.split(jax.random.key(0), 2), X)  # the matrix's program
    a, b = {"w": np.ones(2), "s": 2.0}, {"w": np.zeros(2), "s": 2.0}
    with jax.transfer_guard("disallow"):
        assert "2 seeds" in res.report()  # a result on the device comes back explicitly
        assert float(jgc.relative_error(a, b)) == pytest.approx(np.sqrt(2) / (np.sqrt(2 + 4) + 2))


@pytest.mark.parametrize(
    "flag,fn,deriv",
    [("jax_debug_nans", jnp.sqrt, lambda a: 0.5 / jnp.sqrt(a)), ("jax_debug_infs", jnp.log, lambda a: 1 / a)],
)
def test_debug_nans_and_infs_with_a_real_nan(flag, fn, deriv):
    """A probe of θ − h < 0 makes the loss NaN (sqrt) or −inf (log): under the flag that is an
    unresolved entry of the verdict, not a FloatingPointError; the other entries still decide, and
    the flag stays on."""
    p = {"a": jnp.array([1e-7, 0.5, 2.0])}
    before = getattr(jax.config, flag)
    jax.config.update(flag, True)
    try:
        right = jgc.check_grad(lambda q: jnp.sum(fn(q["a"])), lambda q: {"a": deriv(q["a"])}, p)
        wrong = jgc.check_grad(lambda q: jnp.sum(fn(q["a"])), lambda q: {"a": 2 * deriv(q["a"])}, p)
        assert getattr(jax.config, flag) is True
    finally:
        jax.config.update(flag, before)
    assert not np.isfinite(np.asarray(right.numeric_flat)[0])  # the NaN or inf reached the verdict as data
    assert right.status == "inconclusive" and wrong.status == "failed", (right.report(), wrong.report())


def test_rank_promotion_raise_names_loss_fn():
    """Under jax_numpy_rank_promotion="raise", a loss that relies on rank promotion raises the
    flag's error naming loss_fn and the shapes of what it was called with (JAX inputs); with NumPy
    inputs it is NumPy code, which broadcasts: it runs on the host and gets a verdict."""

    def promoting(p, x):
        return jnp.sum(p["w"] * x)  # (3,) * (2, 1)

    def grad(p, x):
        return {"w": jnp.sum(jnp.broadcast_to(x, (2, 3)), 0).astype(p["w"].dtype)}

    with jax.numpy_rank_promotion("raise"):
        with pytest.raises(ValueError, match=r"loss_fn raised ValueError: .*rank_promotion") as e:
            jgc.check_grad(promoting, grad, {"w": jnp.ones(3)}, jnp.ones((2, 1)))
        assert "args[0]: float32[2, 1]" in str(e.value)
        res = jgc.check_grad(promoting, grad, {"w": np.ones(3, np.float32)}, np.ones((2, 1), np.float32))
    assert res.status == "passed" and any(n.startswith("loss_fn ran on the host") for n in res.host_notes)
