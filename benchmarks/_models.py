"""Small models with hand-written gradients, shared by the benchmarks."""

import jax
import jax.numpy as jnp


def mlp_init(key, sizes=(8, 32, 32, 4), dtype=jnp.float64):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "W": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(m),
            "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def classic_init(key, dtype=jnp.float64):
    """The classic course's gradient-checking network: 3 inputs, 5 hidden units, 3 outputs."""
    return mlp_init(key, (3, 5, 3), dtype)


def mlp_loss(params, x, y, l2=1e-3):
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None])
    out = h @ params[-1]["W"] + params[-1]["b"][None]
    return 0.5 * jnp.mean((out - y) ** 2) + 0.5 * l2 * sum(jnp.sum(p["W"] ** 2) for p in params)


def mlp_grad(params, x, y, l2=1e-3):
    acts = [x]
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None])
        acts.append(h)
    out = h @ params[-1]["W"] + params[-1]["b"][None]
    delta = (out - y) / out.size
    grads = []
    for i in reversed(range(len(params))):
        a = acts[i]
        grads.append({"W": a.T @ delta + l2 * params[i]["W"], "b": delta.sum(0)})
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - a**2)
    return grads[::-1]


def data(key, n_in, n_out, m=16, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (m, n_in), dtype), jax.random.normal(ky, (m, n_out), dtype)


def wide_problem(n, leaves=4, dtype=jnp.float64, seed=0):
    """A cheap, well-conditioned loss on n parameters (nonlinear least squares near a fit)."""
    sizes = [n // leaves] * (leaves - 1) + [n - (n // leaves) * (leaves - 1)]
    keys = jax.random.split(jax.random.key(seed), 2 * leaves)
    p = {f"w{i}": 0.5 * jax.random.normal(keys[i], (s,), dtype) for i, s in enumerate(sizes)}
    y = {k: jnp.tanh(v) + 1e-2 * jax.random.normal(keys[leaves + i], v.shape, dtype) for i, (k, v) in enumerate(p.items())}
    return p, y


def wide_loss(p, y):
    return sum(0.5 * jnp.sum((jnp.tanh(p[k]) - y[k]) ** 2) for k in p)


def wide_grad(p, y):
    return {k: (jnp.tanh(p[k]) - y[k]) * (1 - jnp.tanh(p[k]) ** 2) for k in p}
