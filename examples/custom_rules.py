"""Check custom rules and adjoints: a custom_vjp, a solver's discrete adjoint, a linear operator.

Three checks that go beyond one scalar loss (docs/rules.md says when to use which):

1. `jgc.check_rule` on a numerically safe `logsumexp` written with `jax.custom_vjp`, with
   two outputs (the value and the softmax) and an integer input: every (input, output)
   pair is checked with random cotangents, plus the rule's primal output, zero cotangents
   and the rule under `jax.vmap`. A planted bug in the softmax's cotangent fails on that
   output only.
2. `jgc.taylor_test` on the hand-written discrete adjoint of an RK4-integrated ODE: the
   Taylor remainder falls at rate 2 for the right adjoint, rate 1 for one that forgets the
   last stage's parameter term — whatever the number of parameters, in 57 loss evaluations
   (float64; 33 in float32).
3. `jgc.check_adjoint` on an FFT-based smoothing operator and its hand-written adjoint: the
   dot-product test ⟨A x, y⟩ = ⟨x, Aᵀ y⟩, no finite differences at all. A wrong scale
   factor fails.

Run: python examples/custom_rules.py
"""

import jax
import jax.numpy as jnp

import jgc

# ---------------------------------------------------------------- 1. a custom_vjp rule


def make_lse(bug=False):
    """(x, k) ↦ (logsumexp(k·x), softmax(k·x)) with an integer k, and its hand-written VJP."""

    @jax.custom_vjp
    def lse(x, k):
        z = k * x
        m = jnp.max(z)
        return m + jnp.log(jnp.sum(jnp.exp(z - m))), jax.nn.softmax(z)

    def fwd(x, k):
        out = lse(x, k)
        return out, (out[1], k)

    def bwd(res, ct):
        s, k = res
        a, c = ct  # cotangents of the value and of the softmax
        ds = s * (c - jnp.sum(c * s))  # the softmax's VJP
        if bug:
            ds = s * c  # planted: the normalising term forgotten
        return k * (a * s + ds), None  # no cotangent for the integer k

    lse.defvjp(fwd, bwd)
    return lse


x = jnp.array([0.3, -1.2, 2.0, 50.0, 49.5])  # 50: exp(50) overflows float32's sum without the shift
k = jnp.array(2)

res = jgc.check_rule(make_lse(), x, k, key=jax.random.key(0))
print(res.report(), end="\n\n")
assert bool(res.passed), res.report()
assert res.unchecked_in[0][0] == "[1]"  # the integer input: float0 cotangent, listed as not checked

res = jgc.check_rule(make_lse(bug=True), x, k, key=jax.random.key(0))
print(res.report(), end="\n\n")
assert bool(res.failed)
assert res.out_paths == ("[0]", "[1]")
assert res.output_failed.tolist() == [False, True]  # the softmax output, not the value
assert res.input_failed.tolist() == [True]

# ---------------------------------------------------------------- 2. the discrete adjoint of an ODE solve


def field(p, y):
    return jnp.tanh(p["W"] @ y + p["b"])


def field_vjp(p, y, a):
    """(∂F/∂y)ᵀ a and the parameter cotangents of F(y) = tanh(W y + b), by hand."""
    u = a * (1 - jnp.tanh(p["W"] @ y + p["b"]) ** 2)
    return p["W"].T @ u, {"W": jnp.outer(u, y), "b": u}


def stages(p, y, dt):
    k1 = field(p, y)
    k2 = field(p, y + 0.5 * dt * k1)
    k3 = field(p, y + 0.5 * dt * k2)
    return y, y + 0.5 * dt * k1, y + 0.5 * dt * k2, y + dt * k3, (k1, k2, k3, field(p, y + dt * k3))


def loss(p, y0, target, dt=0.1, n=20):
    """½‖y_N − target‖² after n RK4 steps of dy/dt = tanh(W y + b)."""

    def step(y, _):
        *_, (k1, k2, k3, k4) = stages(p, y, dt)
        return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), y

    last, _ = jax.lax.scan(step, y0, None, length=n)
    return 0.5 * jnp.sum((last - target) ** 2)


def adjoint(p, y0, target, dt=0.1, n=20, bug=False):
    """∂loss/∂p by the discrete adjoint of RK4: stages recomputed backwards, each pulled back by hand."""

    def step(y, _):
        *_, (k1, k2, k3, k4) = stages(p, y, dt)
        return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), y

    last, ys = jax.lax.scan(step, y0, None, length=n)
    w = dt / 6 * jnp.array([1.0, 2.0, 2.0, 1.0], y0.dtype)

    def back(carry, y):
        lam, g = carry
        y1, y2, y3, y4, _ = stages(p, y, dt)
        gy4, gp4 = field_vjp(p, y4, w[3] * lam)
        gy3, gp3 = field_vjp(p, y3, w[2] * lam + dt * gy4)
        gy2, gp2 = field_vjp(p, y2, w[1] * lam + 0.5 * dt * gy3)
        gy1, gp1 = field_vjp(p, y1, w[0] * lam + 0.5 * dt * gy2)
        for gp in (gp1, gp2, gp3) if bug else (gp1, gp2, gp3, gp4):  # planted: the last stage forgotten
            g = jax.tree_util.tree_map(jnp.add, g, gp)
        return (lam + gy1 + gy2 + gy3 + gy4, g), None

    zero = jax.tree_util.tree_map(jnp.zeros_like, p)
    (_, g), _ = jax.lax.scan(back, (last - target, zero), ys, reverse=True)
    return g


kW, kb, ky, kt = jax.random.split(jax.random.key(1), 4)
d = 8
p = {"W": jax.random.normal(kW, (d, d)) / jnp.sqrt(d), "b": 0.1 * jax.random.normal(kb, (d,))}
y0, target = jax.random.normal(ky, (d,)), jax.random.normal(kt, (d,))

with jax.enable_x64(True):  # float64 for this part only: a long clean ladder of rungs
    p64, y064, target64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (p, y0, target))
    res = jgc.taylor_test(loss, adjoint, p64, y064, target64, key=jax.random.key(2))
    print(res.report(), end="\n\n")
    assert bool(res.passed) and abs(float(res.rate) - 2) < 0.1, res.report()

    res = jgc.taylor_test(loss, lambda *a: adjoint(*a, bug=True), p64, y064, target64, key=jax.random.key(2))
    print(res.report(), end="\n\n")
    assert bool(res.failed) and abs(float(res.rate) - 1) < 0.1, res.report()

# float32 too: fewer rungs above rounding, the same verdicts
res = jgc.taylor_test(loss, adjoint, p, y0, target, key=jax.random.key(2))
assert not bool(res.failed), res.report()
res = jgc.taylor_test(loss, lambda *a: adjoint(*a, bug=True), p, y0, target, key=jax.random.key(2))
assert bool(res.failed), res.report()

# ---------------------------------------------------------------- 3. a linear operator and its adjoint


def smooth(x):
    """A circular smoothing filter applied through the real FFT: A x = irfft(ĥ · rfft(x))."""
    n = x.shape[-1]
    freq = jnp.fft.rfftfreq(n)
    return jnp.fft.irfft(jnp.exp(-40.0 * freq**2) * jnp.fft.rfft(x), n=n)


def smooth_adjoint(y, scale=1.0):
    """Aᵀ: the filter is real and even, so the adjoint is the same filter (`scale` plants a bug)."""
    return scale * smooth(y)


x_like = jnp.zeros(64)
res = jgc.check_adjoint(smooth, smooth_adjoint, x_like, x_like, key=jax.random.key(3))
print(res.report(), end="\n\n")
assert bool(res.passed), res.report()

res = jgc.check_adjoint(smooth, lambda y: smooth_adjoint(y, scale=1.01), x_like, x_like, key=jax.random.key(3))
print(res.report())
assert bool(res.failed), res.report()

# jax.linear_transpose gives the adjoint JAX would use in a VJP: it must pass too
res = jgc.check_adjoint(smooth, jax.linear_transpose(smooth, x_like), x_like, x_like, key=jax.random.key(3))
assert bool(res.passed), res.report()
