"""Check a hand-written gradient of an equinox Module (and jax.grad of a stock eqx.nn.MLP).

An equinox Module is a pytree whose leaves are not all parameters: here the
activation is a function leaf and `num_updates` is an int32 counter. jgc checks the
floating-point arrays and lists the other leaves as not checked, like
`eqx.filter(model, eqx.is_inexact_array)`. A planted bug (the hidden layer's bias
gradient forgets the activation's derivative) is caught and named `.b1`.

Needs equinox (`pip install jgc[equinox]`). Run: python examples/equinox_model.py
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

import jgc
import jgc.testing


class MLP(eqx.Module):
    W1: jax.Array
    b1: jax.Array
    W2: jax.Array
    b2: jax.Array
    activation: Callable  # a function leaf: not checked
    num_updates: jax.Array  # an int32 leaf: not checked

    def __init__(self, n_in, n_hidden, n_out, key, dtype=jnp.float64):
        k1, k2 = jax.random.split(key)
        self.W1 = jax.random.normal(k1, (n_in, n_hidden), dtype) / jnp.sqrt(n_in)
        self.b1 = jnp.full((n_hidden,), 0.1, dtype)
        self.W2 = jax.random.normal(k2, (n_hidden, n_out), dtype) / jnp.sqrt(n_hidden)
        self.b2 = jnp.zeros((n_out,), dtype)
        self.activation = jnp.tanh
        self.num_updates = jnp.zeros((), jnp.int32)

    def __call__(self, x):
        h = self.activation(x @ self.W1 + self.b1[None, :])
        return h @ self.W2 + self.b2[None, :]


def loss(model, x, y):
    return 0.5 * jnp.mean(jnp.sum((model(x) - y) ** 2, axis=1)) + 1e-3 * jnp.sum(model.W1**2)


def manual_grad(model, x, y, bug=False):
    """Backpropagation by hand, returning a Module like `model` (non-float leaves unchanged)."""
    z = x @ model.W1 + model.b1[None, :]
    h = jnp.tanh(z)
    dout = (h @ model.W2 + model.b2[None, :] - y) / x.shape[0]
    dz = (dout @ model.W2.T) * (1 - h**2)
    grads = {
        "W1": x.T @ dz + 2e-3 * model.W1,
        "b1": (dout @ model.W2.T).sum(0) if bug else dz.sum(0),  # planted bug: missing tanh'
        "W2": h.T @ dout,
        "b2": dout.sum(0),
    }
    return eqx.tree_at(lambda m: (m.W1, m.b1, m.W2, m.b2), model, tuple(grads[k] for k in ("W1", "b1", "W2", "b2")))


def main():
    with jax.enable_x64(True):
        kx, ky, km = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (8, 3), jnp.float64)
        y = jax.random.normal(ky, (8, 2), jnp.float64)
        model = MLP(3, 5, 2, km)

        right = jgc.check_grad(loss, manual_grad, model, x, y)
        print(right.report(), end="\n\n")
        wrong = jgc.check_grad(loss, lambda m, x, y: manual_grad(m, x, y, bug=True), model, x, y)
        print(wrong.report(), end="\n\n")
        assert bool(right.passed) and not bool(wrong.passed)
        assert [p for p, ok in zip(wrong.layout.paths, jax.tree_util.tree_leaves(wrong.leaf_passed), strict=True) if not ok] == [
            ".b1"
        ]

        # A stock eqx.nn.MLP (its activations are leaves too), at 4 random initialisations, vmapped:
        def mlp_loss(m, x, y):
            return 0.5 * jnp.mean((jax.vmap(m)(x) - y) ** 2)

        init = lambda k: eqx.nn.MLP(3, 2, 4, 1, key=k, dtype=jnp.float64)  # noqa: E731
        seeds = jgc.testing.assert_grad_seeds(mlp_loss, eqx.filter_grad(mlp_loss), init, 4, x, y, autodiff=True)
        print(seeds.report())


if __name__ == "__main__":
    main()
