"""Plot a failing gradient check: per-leaf relative errors and a heatmap of the worst 2-D leaf.

A three-layer MLP with a hand-written backward pass that forgets the L2 term of the
second weight matrix. `res.plot()` returns a matplotlib Figure; this script saves it
as a PNG.

Needs matplotlib (`pip install jgc[plot]`).
Run: python examples/plot.py [OUT.png]   (default: a file in the system temp directory)
"""

import os
import sys
import tempfile

import jax
import jax.numpy as jnp

import jgc

LAM = 1e-2
SIZES = (5, 12, 10, 3)


def init(key, dtype=jnp.float64):
    params = []
    for k, (m, n) in zip(jax.random.split(key, len(SIZES) - 1), zip(SIZES[:-1], SIZES[1:], strict=True), strict=True):
        params.append({"W": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(m), "b": jnp.full((n,), 0.1, dtype)})
    return params


def loss(params, x, y):
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None, :])
    out = h @ params[-1]["W"] + params[-1]["b"][None, :]
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1)) + LAM * sum(jnp.sum(p["W"] ** 2) for p in params)


def manual_grad(params, x, y):
    hs = [x]
    for layer in params[:-1]:
        hs.append(jnp.tanh(hs[-1] @ layer["W"] + layer["b"][None, :]))
    delta = (hs[-1] @ params[-1]["W"] + params[-1]["b"][None, :] - y) / x.shape[0]
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        reg = 0.0 if i == 1 else 2 * LAM * params[i]["W"]  # planted bug: L2 term of layer 1 forgotten
        grads[i] = {"W": hs[i].T @ delta + reg, "b": delta.sum(0)}
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - hs[i] ** 2)
    return grads


def main(path):
    with jax.enable_x64(True):
        kx, ky, kp = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(kx, (16, SIZES[0]), jnp.float64)
        y = jax.random.normal(ky, (16, SIZES[-1]), jnp.float64)
        res = jgc.check_grad(loss, manual_grad, init(kp), x, y)
        print(res.report())
        fig = res.plot()
        fig.savefig(path, dpi=120)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.gettempdir(), "jgc_plot.png"))
