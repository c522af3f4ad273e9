"""check_rule: right rules pass; planted bugs fail and name the input and the output.

Rules: a numerically safe logsumexp (custom_jvp), a custom_jvp for a linear solve, and a
multi-output custom_vjp (two float arguments, two outputs, one integer input). Bugs: wrong for
one argument only, wrong primal output, wrong only under vmap (a custom_vmap batching rule
that reduces over the batch), a wrong JVP/VJP pair.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import counting
from jax.custom_batching import custom_vmap

import jgc

# check_rule compiles several programs per rule (a float32 JVP check also compiles its float64
# re-check): the default tier runs the rules plainly (the host path), the slow tier under jit
# and vmap too (the traced path: everything in one program) and has_aux

# ---------------------------------------------------------------- a safe logsumexp (custom_jvp)


def _lse(jvp_bug=False):
    @jax.custom_jvp
    def lse(x):
        m = jnp.max(x)
        return m + jnp.log(jnp.sum(jnp.exp(x - m)))

    @lse.defjvp
    def lse_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        w = jnp.exp(x - jnp.max(x)) if jvp_bug else jax.nn.softmax(x)  # bug: weights not normalised
        return lse(x), jnp.sum(w * t)

    return lse


def _lse_batch(dtype):
    return jnp.stack([jnp.linspace(-1.0, 2.0, 5), jnp.linspace(30.0, 31.0, 5)]).astype(dtype)  # 30: exp overflows nothing


@pytest.mark.slow_transforms("jit", "vmap")
def test_logsumexp(transform):
    lse = _lse()
    res = transform(lambda x: jgc.check_rule(lse, x, key=jax.random.key(0)), _lse_batch(jnp.float32))
    assert res.kind == "check_rule" and res.in_paths == ("[0]",) and res.out_paths == ("",)
    np.testing.assert_array_equal(res.passed, True)


def test_logsumexp_wrong_jvp_names_input_and_output():
    res = jgc.check_rule(_lse(jvp_bug=True), _lse_batch(jnp.float32)[0], key=jax.random.key(0))
    assert res.status == "failed"
    np.testing.assert_array_equal(res.pair_failed, [[True]])
    report = res.report()
    assert report.startswith("jgc check_rule FAILED: wrong for [0] → out")
    assert re.search(r"✗ \[0\] → out +✗ fail", report)


# ---------------------------------------------------------------- a linear solve (custom_jvp)


def _solve(bug=False):
    @jax.custom_jvp
    def solve(A, b):
        return jnp.linalg.solve(A, b)

    @solve.defjvp
    def solve_jvp(primals, tangents):
        (A, b), (dA, db) = primals, tangents
        x = solve(A, b)
        rhs = db + dA @ x if bug else db - dA @ x  # bug: the sign of the matrix's term
        return x, jnp.linalg.solve(A, rhs)

    return solve


def _system(dtype):
    A = jnp.eye(4, dtype=dtype) * 3 + jnp.arange(16, dtype=dtype).reshape(4, 4) / 16
    return A, jnp.linspace(-1.0, 1.0, 4, dtype=dtype)


@pytest.mark.parametrize("bug", [False, True])
def test_solve(bug):
    with jax.enable_x64(True):
        res = jgc.check_rule(_solve(bug), *_system(jnp.float64), key=jax.random.key(1))
    assert res.in_paths == ("[0]", "[1]")
    assert res.status == ("failed" if bug else "passed")
    # wrong for the matrix only: the right-hand side's rows stay clean
    np.testing.assert_array_equal(res.pair_failed, [[bug], [False]])
    np.testing.assert_array_equal(res.input_failed, [bug, False])


# ---------------------------------------------------------------- a multi-output custom_vjp


def _scale_vmap_bug():
    """y ↦ 2y, whose batching rule sums over the batch: right for one example, wrong when batched."""

    @custom_vmap
    def double(y):
        return 2 * y

    @double.def_vmap
    def double_vmap(axis_size, in_batched, y):
        return 2 * y + 0.1 * jnp.sum(y, axis=0, keepdims=True), True  # planted: a batch-dependent reduction

    return double


def _multi(bug=None):
    """(x, y, n) ↦ (x·y·n, sin(x) + y) with n an integer."""

    @jax.custom_vjp
    def f(x, y, n):
        return x * y * n, jnp.sin(x) + y

    def fwd(x, y, n):
        out = f(x, y, n)
        if bug == "primal":  # the rule's primal output is off
            out = (out[0], out[1] + 0.01)
        return out, (x, y, n)

    def bwd(res, ct):
        x, y, n = res
        a, b = ct
        gx = a * y * n + b * jnp.cos(x)
        gy = a * x * n + (2 * b if bug == "one_argument" else b)  # bug: wrong for y, through out[1] only
        if bug == "vmap":
            gy = a * x * n + _scale_vmap_bug()(b) / 2
        if bug == "zero_cotangent":  # wrong only when every cotangent is 0: no random cotangent sees it
            gx = gx + jnp.where(jnp.all(a == 0) & jnp.all(b == 0), 0.01, 0.0)
        return gx, gy, None

    f.defvjp(fwd, bwd)
    return f


def _multi_primals(dtype=jnp.float32):
    return jnp.linspace(0.1, 1.0, 3, dtype=dtype), jnp.linspace(1.0, 2.0, 3, dtype=dtype), jnp.array(2)


@pytest.mark.slow_transforms("jit", "vmap")
def test_multi_output_vjp(transform):
    f = _multi()
    x, y, n = _multi_primals()
    batch = (jnp.stack([x, x + 0.2]), jnp.stack([y, y - 0.1]))
    res = transform(lambda xy: jgc.check_rule(f, *xy, n, key=jax.random.key(2)), batch)
    assert res.in_paths == ("[0]", "[1]") and res.out_paths == ("[0]", "[1]")
    assert res.unchecked_in == (("[2]", "int32: float0 tangent and cotangent, not checked"),)
    assert res.vjp_per_output and res.jvp is None and res.jvp_missing.startswith("TypeError: can't apply forward-mode")
    np.testing.assert_array_equal(res.passed, True)


@pytest.mark.parametrize(
    "bug, pairs, primal",
    [
        ("one_argument", [[False, False], [False, True]], [False, False]),
        ("primal", [[False, False], [False, False]], [False, True]),
        ("vmap", [[False, False], [False, True]], [False, False]),
        ("zero_cotangent", [[False, False], [False, False]], [False, False]),
    ],
)
def test_multi_output_bugs(bug, pairs, primal):
    res = jgc.check_rule(_multi(bug), *_multi_primals(), key=jax.random.key(2))
    assert res.status == "failed"
    np.testing.assert_array_equal(res.pair_failed, pairs)
    np.testing.assert_array_equal(np.asarray(res.primal_error)[:, 1] > float(res.tol), primal)
    report = res.report()
    if bug == "vmap":  # only the batched rule is wrong: the finite differences and the loop agree
        assert bool(res.vjp[1].passed) and float(res.vmap_vjp[1, 1]) > 0.01
        assert re.search(r"✗ \[1\] → out\[1\] .* ok .*✗ *$", report, re.M)
    elif bug == "primal":
        assert "primal output differs from f at out[1]" in report
    elif bug == "zero_cotangent":  # only VJP(0) = 0 catches it, and names the input
        np.testing.assert_array_equal(res.input_failed, [True, False])
        assert float(res.zero_vjp[0]) == pytest.approx(0.01) and float(res.zero_vjp[1]) == 0
        assert all(bool(r.passed) for r in res.vjp) and "the VJP is wrong for [0]" in report
    else:
        assert "wrong for [1] → out[1]" in report


# ---------------------------------------------------------------- a wrong JVP/VJP pair


def _pair_bug(A):
    """A solve through lax.custom_linear_solve whose hand-written transpose solve is wrong (it
    solves with A, not Aᵀ): the JVP uses `solve` and is right, the VJP uses `transpose_solve`."""
    solve = lambda matvec, b: jnp.linalg.solve(A, b)  # noqa: E731
    return lambda b: jax.lax.custom_linear_solve(lambda x: A @ x, b, solve=solve, transpose_solve=solve)


def test_wrong_jvp_vjp_pair():
    A, b = _system(jnp.float32)
    res = jgc.check_rule(_pair_bug(A), b, key=jax.random.key(3))
    assert res.status == "failed"
    assert bool(res.jvp.passed) and bool(res.adjoint.failed) and res.vjp == ()
    assert re.search(r"✗ \[0\] → out +ok +— +\d\.\de[-+]\d\d✗", res.report())


# ---------------------------------------------------------------- aux, errors


@pytest.mark.slow
def test_second_call_compiles_nothing():
    """Every program of the check is cached on f: another point of the same shapes reuses them all."""
    f = _multi()
    x, y, n = _multi_primals()
    x2, key = x + 0.1, jax.random.key(1)
    assert jgc.check_rule(f, x, y, n, key=jax.random.key(0)).status == "passed"
    with counting() as c:
        res = jgc.check_rule(f, x2, y, n, key=key)
    assert res.status == "passed" and c["compiles"] == 0


@pytest.mark.slow
def test_has_aux_is_left_out():
    lse = _lse()

    def f(x):
        return lse(x), {"argmax": jnp.argmax(x)}

    res = jgc.check_rule(f, jnp.linspace(-1.0, 2.0, 5), key=jax.random.key(0), has_aux=True)
    assert res.status == "passed"
    assert ("aux", "has_aux: left out of the check") in res.unchecked_out
    assert "not checked: output aux" in res.report()


def test_errors():
    with pytest.raises(ValueError, match=re.escape("check_rule needs at least one floating-point primal; received only [0]")):
        jgc.check_rule(lambda n: n * 2.0, jnp.array(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("no primals given")):
        jgc.check_rule(jnp.sin, key=jax.random.key(0))
    with pytest.raises(ValueError, match=re.escape("has_aux=True: f must return a pair (output, aux)")):
        jgc.check_rule(jnp.sin, jnp.ones(2), key=jax.random.key(0), has_aux=True)
