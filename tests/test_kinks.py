"""Kinks: one-sided differences that disagree; a valid subgradient is accepted, a wrong one is not."""

import jax
import jax.numpy as jnp
import numpy as np

import jgc


def relu_net(p, x, y, *_):
    h = jnp.maximum(x @ p["W1"] + p["b1"][None], 0)
    return 0.5 * jnp.mean((h @ p["W2"] - y) ** 2)


def relu_grad(p, x, y, variant):
    """variant 0: correct (relu'(0) = 0); 1: relu'(0) = 1 (also valid); 2: relu' = 1 everywhere (wrong)."""
    z = x @ p["W1"] + p["b1"][None]
    h = jnp.maximum(z, 0)
    dout = (h @ p["W2"] - y) / x.shape[0]
    dh = dout @ p["W2"].T
    mask = jnp.where(variant == 1, z >= 0, z > 0)
    dz = jnp.where(variant == 2, dh, dh * mask)
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ dout}


def at_kink(key, dtype):
    """Params whose pre-activations for sample 0 are exactly 0 in units 0 and 1."""
    k = jax.random.split(key, 4)
    x = jax.random.normal(k[0], (5, 3), dtype)
    W1 = jax.random.normal(k[1], (3, 4), dtype)
    b1 = jax.random.normal(k[2], (4,), dtype).at[:2].set(-(x @ W1)[0, :2])
    return {"W1": W1, "b1": b1, "W2": jax.random.normal(k[3], (4, 1), dtype)}, x


def test_relu_at_zero_no_false_alarm_wrong_gradient_caught(dtype, transform):
    keys = jax.random.split(jax.random.key(3), 2)
    batch, xs = jax.vmap(lambda k: at_kink(k, dtype))(keys)
    x = xs[0]
    batch, _ = jax.vmap(lambda k: at_kink(k, dtype))(jnp.stack([keys[0], keys[0]]))
    y = jnp.linspace(-1, 1, 5, dtype=dtype)[:, None]
    assert float(jnp.max(jnp.abs((x @ batch["W1"][0] + batch["b1"][0][None])[0, :2]))) == 0.0

    def check(p):
        return jax.vmap(lambda v: jgc.check_grad(relu_net, relu_grad, p, x, y, v))(jnp.arange(3))

    res = transform(check, batch)
    passed = np.asarray(res.passed)
    assert passed[:, 0].all() and passed[:, 1].all(), res.report()
    assert not passed[:, 2].any()
    assert not np.asarray(res.leaf_passed["W1"])[:, 2].any()
    kinks = np.asarray(res.kink["b1"])  # (batch, variant, 4)
    assert kinks[:, 0, :2].all() and not kinks[:, 0, 2:].any()
    assert kinks[:, 1, :2].all()


def test_abs_kink_accepts_subgradients_only(dtype):
    p = jnp.array([0.0, 1.5, -2.0], dtype)
    f = lambda p, s: jnp.sum(jnp.abs(p))  # noqa: E731
    g = lambda p, s: jnp.sign(p) + jnp.where(p == 0, s, 0).astype(p.dtype)  # noqa: E731
    subgradients = jnp.array([0.0, 0.5, -1.0, 1.5, -3.0], dtype)  # the last two are not in [-1, 1]
    res = jax.vmap(lambda s: jgc.check_grad(f, g, p, s))(subgradients)
    np.testing.assert_array_equal(np.asarray(res.passed), [True, True, True, False, False])
    # s = 0 equals the central difference at the kink (the mean of the one-sided slopes): nothing to
    # explain, so the step 2h is not taken; 0.5 and -1 disagree with it and are recognised as subgradients
    np.testing.assert_array_equal(np.asarray(res.kink)[1:3], [[True, False, False]] * 2)
    assert not np.asarray(res.kink)[0].any() and not np.asarray(res.kink)[3:].any()
    assert np.asarray(res.failed)[3:].all() and not np.asarray(res.failed)[:3].any()


def test_kinks_in_report():
    p = jnp.array([0.0, 1.5])
    res = jgc.check_grad(lambda p: jnp.sum(jnp.maximum(p, 0)), lambda p: (p > 0).astype(p.dtype), p)
    text = res.report()
    assert "1 kink (: 1)" in text or "1 kink" in text
    assert "valid subgradient" in text


def test_smooth_curvature_is_not_a_kink(dtype):
    p = jnp.linspace(-2, 2, 7, dtype=dtype)
    res = jgc.check_grad(lambda p: jnp.sum(jnp.exp(2 * p)), lambda p: 2 * jnp.exp(2 * p), p)
    assert bool(res.passed) and not np.asarray(res.kink).any()
