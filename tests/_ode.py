"""An RK4-integrated ODE and its hand-written discrete adjoint (tests, the Taylor benchmark).

dy/dt = tanh(W y + b), integrated with classical RK4 (N steps of size dt) from a fixed y0;
the loss is ½‖y_N − target‖². `adjoint` is the discrete adjoint of the RK4 scheme written by
hand: the stages are recomputed backwards and each stage's cotangent is pulled back
through the vector field's hand-written VJP. `adjoint(..., bug=True)` forgets the last
stage's parameter contribution (a forgotten term, ≈ 1/6 of the gradient).
"""

import jax
import jax.numpy as jnp


def field(p, y):
    return jnp.tanh(p["W"] @ y + p["b"])


def field_vjp(p, y, a):
    """(∂F/∂y)ᵀ a and the parameter cotangents of F(y) = tanh(W y + b), by hand."""
    s = 1 - jnp.tanh(p["W"] @ y + p["b"]) ** 2
    u = a * s
    return p["W"].T @ u, {"W": jnp.outer(u, y), "b": u}


def step(p, y, dt):
    k1 = field(p, y)
    k2 = field(p, y + 0.5 * dt * k1)
    k3 = field(p, y + 0.5 * dt * k2)
    k4 = field(p, y + dt * k3)
    return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def trajectory(p, y0, dt, n):
    def body(y, _):
        y1 = step(p, y, dt)
        return y1, y

    last, ys = jax.lax.scan(body, y0, None, length=n)
    return last, ys  # y_N and y_0 … y_{N−1}


def loss(p, y0, target, dt=0.1, n=20):
    last, _ = trajectory(p, y0, dt, n)
    return 0.5 * jnp.sum((last - target) ** 2)


def adjoint(p, y0, target, dt=0.1, n=20, bug=False):
    """∂loss/∂p by the discrete adjoint of RK4."""
    last, ys = trajectory(p, y0, dt, n)
    w = dt / 6 * jnp.array([1.0, 2.0, 2.0, 1.0], y0.dtype)

    def back(carry, y):
        lam, g = carry
        k1 = field(p, y)
        y2 = y + 0.5 * dt * k1
        k2 = field(p, y2)
        y3 = y + 0.5 * dt * k2
        k3 = field(p, y3)
        y4 = y + dt * k3
        gy4, gp4 = field_vjp(p, y4, w[3] * lam)
        gy3, gp3 = field_vjp(p, y3, w[2] * lam + dt * gy4)
        gy2, gp2 = field_vjp(p, y2, w[1] * lam + 0.5 * dt * gy3)
        gy1, gp1 = field_vjp(p, y, w[0] * lam + 0.5 * dt * gy2)
        stages = (gp1, gp2, gp3) if bug else (gp1, gp2, gp3, gp4)
        for gp in stages:
            g = jax.tree_util.tree_map(jnp.add, g, gp)
        return (lam + gy1 + gy2 + gy3 + gy4, g), None

    zero = jax.tree_util.tree_map(jnp.zeros_like, p)
    (_, g), _ = jax.lax.scan(back, (last - target, zero), ys, reverse=True)
    return g


def problem(d, dtype, key=None):
    """Parameters, y0 and a target for a d-dimensional state (d² + d parameters)."""
    key = jax.random.key(0) if key is None else key
    kW, kb, ky, kt = jax.random.split(key, 4)
    p = {"W": jax.random.normal(kW, (d, d), dtype) / jnp.sqrt(d), "b": 0.1 * jax.random.normal(kb, (d,), dtype)}
    return p, jax.random.normal(ky, (d,), dtype), jax.random.normal(kt, (d,), dtype)
