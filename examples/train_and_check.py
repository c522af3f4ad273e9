"""Train a small network with a hand-written backward pass, and check its gradient at
several initializations and at snapshots taken during training, all in one call.

Run: python examples/train_and_check.py
"""

import jax
import jax.numpy as jnp

import jgc


def init(key, sizes=(4, 16, 16, 1)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"W": jax.random.normal(k, (m, n)) / jnp.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def forward(params, x):
    acts = [x]
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["W"] + layer["b"])
        acts.append(x)
    return x @ params[-1]["W"] + params[-1]["b"], acts


def loss(params, x, y, l2=1e-3):
    out, _ = forward(params, x)
    return 0.5 * jnp.mean((out - y) ** 2) + 0.5 * l2 * sum(jnp.sum(p["W"] ** 2) for p in params)


def grad(params, x, y, l2=1e-3):
    """The hand-written backward pass."""
    out, acts = forward(params, x)
    delta = (out - y) / out.size  # d loss / d out
    grads = []
    for i in reversed(range(len(params))):
        a = acts[i]
        grads.append({"W": a.T @ delta + l2 * params[i]["W"], "b": delta.sum(0)})
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - a**2)
    return grads[::-1]


def main():
    with jax.enable_x64(True):  # a firm verdict: check in float64
        kx, kinit = jax.random.split(jax.random.key(0))
        x = jax.random.normal(kx, (64, 4))
        y = jnp.sin(x.sum(1, keepdims=True))

        # Train with the hand-written gradient, keeping snapshots.
        params, snapshots = init(kinit), []
        step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.1 * g, p, grad(p, x, y)))
        for t in range(300):
            if t % 100 == 0:
                snapshots.append(params)
            params = step(params)
        snapshots.append(params)
        print(f"loss: {float(loss(snapshots[0], x, y)):.4f} at init -> {float(loss(params, x, y)):.4f} after 300 steps")

        # Check 8 fresh initializations (other seeds) and the 4 training snapshots in one
        # compiled, vmapped call. (`jgc.check_seeds(loss, grad, init, keys, x, y)` checks
        # initializations alone.)
        inits = jax.vmap(init)(jax.random.split(jax.random.key(1), 8))
        trained = jax.tree.map(lambda *s: jnp.stack(s), *snapshots)
        stacked = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), inits, trained)
        res = jgc.check_snapshots(loss, grad, stacked, x, y)
        print("checks 0-7: fresh initializations; 8-11: training snapshots at steps 0, 100, 200, 300")
        print(res.report(max_leaves=3))
        assert bool(res.passed.all()), "the hand-written gradient should pass at every snapshot"


if __name__ == "__main__":
    main()
