"""Check a hand-written gradient on a flax linen parameter tree.

`model.init` returns `{'params': {'Dense_0': {'kernel', 'bias'}, ...}}`; jgc checks
it like any pytree and reports leaves by their flax paths. The hand-written
backward below has a planted bug in the output layer's kernel gradient (a missing
transpose on a square matrix), caught and named
`['params']['Dense_1']['kernel']`. The same tree also goes through
`check_grad(..., autodiff=True)`, which adds the jax.grad cross-check.

Needs flax (`pip install jgc[flax]`). Run: python examples/flax_model.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

import jgc


class MLP(nn.Module):
    hidden: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden, param_dtype=x.dtype)(x))
        return nn.Dense(self.hidden, param_dtype=x.dtype)(x)


model = MLP()


def loss(variables, x, y):
    return 0.5 * jnp.mean(jnp.sum((model.apply(variables, x) - y) ** 2, axis=1))


def manual_grad(variables, x, y, bug=False):
    p = variables["params"]
    k0, b0, k1, b1 = p["Dense_0"]["kernel"], p["Dense_0"]["bias"], p["Dense_1"]["kernel"], p["Dense_1"]["bias"]
    h = jnp.tanh(x @ k0 + b0[None, :])
    dout = (h @ k1 + b1[None, :] - y) / x.shape[0]
    dz = (dout @ k1.T) * (1 - h**2)
    dk1 = (dout.T @ h) if bug else (h.T @ dout)  # planted bug: transposed (square, so shapes agree)
    return {"params": {"Dense_0": {"kernel": x.T @ dz, "bias": dz.sum(0)}, "Dense_1": {"kernel": dk1, "bias": dout.sum(0)}}}


def main():
    with jax.enable_x64(True):
        kx, ky, ki = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (8, 3), jnp.float64)
        y = jax.random.normal(ky, (8, 4), jnp.float64)
        variables = model.init(ki, x)

        right = jgc.check_grad(loss, manual_grad, variables, x, y, autodiff=True)
        print(right.report(), end="\n\n")
        wrong = jgc.check_grad(loss, lambda v, x, y: manual_grad(v, x, y, bug=True), variables, x, y)
        print(wrong.report())
        assert bool(right.passed) and bool(right.autodiff.passed) and not bool(wrong.passed)
        failing = [p for p, ok in zip(wrong.layout.paths, jax.tree_util.tree_leaves(wrong.leaf_passed), strict=True) if not ok]
        assert failing == ["['params']['Dense_1']['kernel']"], failing


if __name__ == "__main__":
    main()
