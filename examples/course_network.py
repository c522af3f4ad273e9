"""Gradient checking the classic 3-layer network with a hand-written backward pass.

LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID, cross-entropy averaged over m
examples, parameters W1, b1, W2, b2, W3, b3 (column-major convention: X is (n_x, m)).
The check is run once on the correct backward pass and once on a copy with a planted
bug, and both reports are printed.

    python examples/course_network.py
"""

import jax
import jax.numpy as jnp

import jgc


def init(key, sizes=(4, 5, 3, 1)):
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for layer, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]), start=1):
        params[f"W{layer}"] = jax.random.normal(k, (n_out, n_in)) * jnp.sqrt(2.0 / n_in)
        params[f"b{layer}"] = 0.1 * jax.random.normal(jax.random.fold_in(k, 7), (n_out, 1))
    return params


def forward(params, X):
    Z1 = params["W1"] @ X + params["b1"]
    A1 = jax.nn.relu(Z1)
    Z2 = params["W2"] @ A1 + params["b2"]
    A2 = jax.nn.relu(Z2)
    Z3 = params["W3"] @ A2 + params["b3"]
    A3 = jax.nn.sigmoid(Z3)
    return A3, (Z1, A1, Z2, A2, Z3, A3)


def cost(params, X, Y):
    """Cross-entropy averaged over the m examples."""
    A3, _ = forward(params, X)
    m = X.shape[1]
    return -jnp.sum(Y * jnp.log(A3) + (1 - Y) * jnp.log(1 - A3)) / m


def backward(params, X, Y):
    """The hand-written backward pass."""
    m = X.shape[1]
    _, (Z1, A1, Z2, A2, Z3, A3) = forward(params, X)
    dZ3 = A3 - Y
    dW3 = dZ3 @ A2.T / m
    db3 = jnp.sum(dZ3, axis=1, keepdims=True) / m
    dA2 = params["W3"].T @ dZ3
    dZ2 = dA2 * (Z2 > 0)
    dW2 = dZ2 @ A1.T / m
    db2 = jnp.sum(dZ2, axis=1, keepdims=True) / m
    dA1 = params["W2"].T @ dZ2
    dZ1 = dA1 * (Z1 > 0)
    dW1 = dZ1 @ X.T / m
    db1 = jnp.sum(dZ1, axis=1, keepdims=True) / m
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def backward_with_bug(params, X, Y):
    """The same backward pass with the classic slip: dW2 is twice too large."""
    grads = backward(params, X, Y)
    return {**grads, "W2": 2 * grads["W2"]}


def main():
    with jax.enable_x64(True):  # float64 for a firm verdict; the setting is restored on exit
        kp, kx, ky = jax.random.split(jax.random.PRNGKey(1), 3)
        params = init(kp)
        X = jax.random.normal(kx, (4, 3))
        Y = (jax.random.uniform(ky, (1, 3)) > 0.5).astype(X.dtype)

        good = jgc.check_grad(cost, backward, params, X, Y)
        print("Correct backward pass:")
        print(good.report())
        print()
        bad = jgc.check_grad(cost, backward_with_bug, params, X, Y)
        print("Backward pass with a planted bug:")
        print(bad.report())
        print()
        print("worst coordinates:")
        for c in bad.worst(3):
            print(f"  {c.path}{list(c.index)}: numeric {c.numeric:+.6e}, analytic {c.analytic:+.6e}")
        assert bool(good.passed) and not bool(bad.passed)


if __name__ == "__main__":
    main()
