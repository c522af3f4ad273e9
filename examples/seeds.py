"""One vmapped check over 64 random initializations of an MLP.

The gradient should be checked at many random initializations, not one: here a single
`jax.vmap` runs the whole check for 64 seeds in one compiled call, and the report says
how many seeds failed and shows the worst one.

    python examples/seeds.py
"""

import jax
import jax.numpy as jnp

import jgc

SIZES = (6, 8, 8, 3)


def init(key):
    keys = jax.random.split(key, len(SIZES) - 1)
    return [
        {"W": jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,))}
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:])
    ]


def loss(params, x, y):
    """Softmax cross-entropy of a tanh MLP, plus L2 on the weights."""
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None])
    logits = h @ params[-1]["W"] + params[-1]["b"][None]
    logp = jax.nn.log_softmax(logits)
    l2 = sum(jnp.sum(layer["W"] ** 2) for layer in params)
    return -jnp.mean(jnp.sum(y * logp, axis=1)) + 1e-3 * l2


def grad(params, x, y):
    """Hand-written backward pass of `loss`."""
    acts = [x]
    for layer in params[:-1]:
        acts.append(jnp.tanh(acts[-1] @ layer["W"] + layer["b"][None]))
    logits = acts[-1] @ params[-1]["W"] + params[-1]["b"][None]
    delta = (jax.nn.softmax(logits) - y) / x.shape[0]
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        grads[i] = {"W": acts[i].T @ delta + 2e-3 * params[i]["W"], "b": delta.sum(0)}
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - acts[i] ** 2)
    return grads


def main(num_seeds=64):
    with jax.enable_x64(True):
        kx, ky = jax.random.split(jax.random.PRNGKey(0))
        x = jax.random.normal(kx, (16, SIZES[0]))
        y = jax.nn.one_hot(jax.random.randint(ky, (16,), 0, SIZES[-1]), SIZES[-1])
        keys = jax.random.split(jax.random.PRNGKey(42), num_seeds)

        res = jax.vmap(lambda k: jgc.check_grad(loss, grad, init(k), x, y))(keys)
        print(res.report(max_leaves=6))
        print(
            f"\nrel_error over {num_seeds} seeds: median {float(jnp.median(res.rel_error)):.2e}, max {float(res.rel_error.max()):.2e}"
        )
        assert bool(res.passed.all())


if __name__ == "__main__":
    main()
