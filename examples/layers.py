"""Check the hand-written backward function of each layer of the classic network on its own.

The classic from-scratch network has, for each layer, a forward function and a
backward function that maps the gradient of the output (the cotangent) to the
gradients of the inputs. `jgc.check_vjp` checks one backward function at a time; the
sigmoid backward below has a planted bug (σ(1 − σ) written as σ(1 + σ)), and the
report names its input. `jgc.check_jvp` does the same for a forward-mode rule.

Run: python examples/layers.py
"""

import jax
import jax.numpy as jnp

import jgc


def linear(W, b, x):
    return x @ W + b[None, :]


def linear_backward(primals, dout):
    W, b, x = primals
    return x.T @ dout, dout.sum(0), dout @ W.T


def relu(x):
    return jnp.maximum(x, 0)


def relu_backward(primals, dout):
    (x,) = primals
    return (dout * (x > 0),)


def sigmoid(x):
    return 1 / (1 + jnp.exp(-x))


def sigmoid_backward_buggy(primals, dout):
    (x,) = primals
    s = sigmoid(x)
    return (dout * s * (1 + s),)  # planted bug: should be s * (1 - s)


def sigmoid_jvp(primals, tangents):
    (x,), (tx,) = primals, tangents
    s = sigmoid(x)
    return s * (1 - s) * tx


def main():
    with jax.enable_x64(True):  # float64: a firm verdict
        kW, kx, kc = jax.random.split(jax.random.key(0), 3)
        W = jax.random.normal(kW, (4, 3), jnp.float64)
        b = jnp.zeros(3, jnp.float64)
        x = jax.random.normal(kx, (5, 4), jnp.float64)
        h = linear(W, b, x) + 0.05  # keep relu's inputs off its kink at 0
        checks = {
            "linear": jgc.check_vjp(linear, linear_backward, W, b, x, key=kc),
            "relu": jgc.check_vjp(relu, relu_backward, h, key=kc),
            "sigmoid (planted bug)": jgc.check_vjp(sigmoid, sigmoid_backward_buggy, h, key=kc),
            "sigmoid forward-mode rule": jgc.check_jvp(sigmoid, sigmoid_jvp, h, key=kc),
        }
        for name, res in checks.items():
            print(f"== {name}")
            print(res.report())
            print()
    failed = [name for name, res in checks.items() if not bool(res.passed)]
    print("failed:", ", ".join(failed))
    assert failed == ["sigmoid (planted bug)"], failed


if __name__ == "__main__":
    main()
