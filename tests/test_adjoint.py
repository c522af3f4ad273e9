"""check_adjoint: the dot-product test on an FFT-based operator, right and with a wrong scale factor."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import counting

import jgc

N = 64


def _kernel(dtype):
    return jnp.exp(-jnp.linspace(0.0, 3.0, N // 2 + 1)).astype(dtype)


def smooth(x, k):
    """A circular convolution through the FFT: irfft(k · rfft(x)) (real → real, symmetric)."""
    return jnp.fft.irfft(k * jnp.fft.rfft(x), n=N)


def smooth_adjoint(y, k):
    """Hand-written adjoint: the convolution is symmetric, so it is its own adjoint."""
    return jnp.fft.irfft(k * jnp.fft.rfft(y), n=N)


def smooth_adjoint_bad(y, k):
    """Planted bug: the 'ortho' normalisation on one side only — a scale factor √N off."""
    return jnp.fft.irfft(k * jnp.fft.rfft(y, norm="ortho"), n=N, norm="ortho") * np.sqrt(N)


@pytest.mark.parametrize("bad", [False, True])
def test_fft_operator(dtype, transform, bad):
    k = _kernel(dtype)
    AT = smooth_adjoint_bad if bad else smooth_adjoint

    def check(key):
        x = jnp.zeros(N, dtype)
        return jgc.check_adjoint(lambda v: smooth(v, k), lambda w: AT(w, k), x, x, key=key)

    res = transform(check, jax.random.split(jax.random.key(0), 2))
    assert res.kind == "check_adjoint"
    np.testing.assert_array_equal(res.passed, not bad)
    np.testing.assert_array_equal(res.failed, bad)
    if bad:
        np.testing.assert_array_less(0.1, res.rel_error)
    else:
        np.testing.assert_array_less(res.rel_error, 1e-5 if dtype == jnp.float32 else 1e-13)


def test_scale_bug_is_subtle_but_fails():
    """A wrong scale factor of 1 + 1e-2 is far beyond float32 rounding: failed, with the mismatch reported."""
    k = _kernel(jnp.float32)
    x = jnp.zeros(N, jnp.float32)
    res = jgc.check_adjoint(lambda v: smooth(v, k), lambda w: 1.01 * smooth_adjoint(w, k), x, x, key=jax.random.key(1))
    assert res.status == "failed"
    assert 1e-3 < float(res.rel_error) < 3e-2
    report = res.report()
    assert report.startswith("jgc check_adjoint FAILED: ⟨Ax, y⟩ ≠ ⟨x, ATy⟩ beyond rounding")
    assert re.search(r"✗ A +\d", report)


def test_linear_transpose():
    """jax.linear_transpose of the operator passes (the 1-tuple it returns is unwrapped)."""
    k = _kernel(jnp.float32)
    x = jnp.zeros(N, jnp.float32)
    A = lambda v: smooth(v, k)  # noqa: E731
    assert jgc.check_adjoint(A, jax.linear_transpose(A, x), x, x, key=jax.random.key(2)).status == "passed"


@pytest.mark.slow
def test_complex_fft():
    """The complex FFT: its Hermitian adjoint with conjugate=True, its transpose (JAX's convention)
    without, and the unnormalised inverse (a 1/N where 1/√N belongs) fails."""
    z = jnp.zeros(N, jnp.complex64)
    F = lambda v: jnp.fft.fft(v, norm="ortho")  # noqa: E731
    herm = jgc.check_adjoint(F, lambda w: jnp.fft.ifft(w, norm="ortho"), z, z, key=jax.random.key(3), conjugate=True)
    trans = jgc.check_adjoint(F, jax.linear_transpose(F, z), z, z, key=jax.random.key(3))
    wrong = jgc.check_adjoint(F, lambda w: jnp.fft.ifft(w), z, z, key=jax.random.key(3), conjugate=True)
    assert (herm.status, trans.status, wrong.status) == ("passed", "passed", "failed")


def test_blocks_name_the_wrong_block():
    """A matrix-free operator on pytrees: {'a', 'b'} → (y0, y1); the adjoint is wrong in one block only."""
    M = jnp.arange(12.0).reshape(3, 4) / 10
    A = lambda x: (M @ x["a"], 2.0 * x["b"] + M[:, :2] @ x["a"][:2])  # noqa: E731

    def AT(y):
        a = M.T @ y[0] + jnp.concatenate([M[:, :2].T @ y[1], jnp.zeros(2)])
        return {"a": a, "b": 3.0 * y[1]}  # planted bug: the b → y1 block should be 2

    x_like = {"a": jnp.zeros(4), "b": jnp.zeros(3)}
    y_like = (jnp.zeros(3), jnp.zeros(3))
    res = jgc.check_adjoint(A, AT, x_like, y_like, key=jax.random.key(4), blocks=True)
    assert res.x_paths == ("['a']", "['b']") and res.y_paths == ("[0]", "[1]")
    np.testing.assert_array_equal(res.block_failed, [[False, False], [False, True]])
    assert "in y[1] ← x['b']" in res.report()


def test_errors():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match=re.escape("A output: shape (2,) != y_like shape (3,).")):
        jgc.check_adjoint(lambda v: v[:2], lambda w: w, x, x, key=jax.random.key(0))
    with pytest.raises(TypeError, match=re.escape("x_like has dtype int32; a linear map acts on floating-point")):
        jgc.check_adjoint(lambda v: v, lambda w: w, jnp.zeros(3, jnp.int32), x, key=jax.random.key(0))
    with pytest.raises(TypeError, match=re.escape("key must be a PRNG key")):
        jgc.check_adjoint(lambda v: v, lambda w: w, x, x, key=0)


def test_second_call_compiles_nothing():
    """The operators' program is cached on them: another key reuses it."""
    M = jnp.arange(6.0).reshape(2, 3)
    A, AT, x, y, key = (lambda v: M @ v), (lambda w: M.T @ w), jnp.zeros(3), jnp.zeros(2), jax.random.key(1)
    assert jgc.check_adjoint(A, AT, x, y, key=jax.random.key(0)).status == "passed"
    with counting() as c:
        res = jgc.check_adjoint(A, AT, x, y, key=key)
    assert res.status == "passed" and c["compiles"] == 0
