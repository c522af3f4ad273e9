"""Partial evaluation (jgc/_partial/) against the plain engine and the peers.

For each model: a full per-coordinate numeric gradient in float64 on CPU by

- jgc, plain engine   (`jgc.numeric_grad(..., partial_eval=False)`), 2n evaluations;
- jgc, partial eval   (`jgc.numeric_grad(..., partial_eval=True)`), same probes and stencil;
- scipy.optimize.check_grad (forward differences, n + 1 evaluations of a jitted JAX loss);
- torch.autograd.gradcheck (CPU, float64, central differences, 2n evaluations of the same
  model written in torch).

jgc times are split into compile (`jax.jit(...).lower(...).compile()`) and one run of the
compiled function; every tool runs once, in one process, one after the other, so the
ratios compare runs made under the same machine load. The numeric gradients of the two jgc
paths are compared (max |difference| and relative error).

With `--course`: the course MLPs (weights W[l] of shape (n_l, n_{l-1}), column-vector
biases b[l] of shape (n_l, 1) broadcast over the examples, examples in columns, tanh hidden
layers, sigmoid output, cross-entropy), n = 8,577 (100-64-32-1, 64 examples) and n = 34,645
(200-128-64-10-1, 64 examples), float64: `jgc.numeric_grad` with and without
`partial_eval=True`, the first call (trace, compile and run) and warm calls (the compiled
check again), alternating plain and partial in one process so that each ratio compares
calls made under the same load; and the largest |partial − plain| over the rounding bound
of tests/test_partial.py (16·ε·max(1, |J|)/eps), and both against jax.grad.

Usage:
  python benchmarks/partial_eval.py            # the full set (a few minutes on 2 cores)
  python benchmarks/partial_eval.py --course --repeats 3   # the course MLPs (results/partial_eval_course.json)
  python benchmarks/partial_eval.py --quick    # tiny sizes, checks the script runs
  python benchmarks/partial_eval.py --no-peers # jgc paths only
  python benchmarks/partial_eval.py --torch none  # skip torch.autograd.gradcheck: in its full
      # (slow) mode it took 1,172 s on mlp_first_layer here, ~17 ms per loss evaluation
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import _common  # noqa: E402  (benchmarks/ is this script's folder)
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jgc

jax.config.update("jax_enable_x64", True)  # a benchmark process of its own: float64 throughout


# ---------------------------------------------------------------- models (JAX and torch)


def mlp(sizes, batch, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 2 * len(sizes) + 2)
    params = [
        {"W": jax.random.normal(ks[2 * i], (a, b)) / np.sqrt(a), "b": 0.1 * jax.random.normal(ks[2 * i + 1], (b,))}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    x, y = jax.random.normal(ks[-1], (batch, sizes[0])), jax.random.normal(ks[-2], (batch,))

    def loss(p, x, y):
        h = x
        for layer in p[:-1]:
            h = jnp.tanh(h @ layer["W"] + layer["b"][None])
        return jnp.mean(((h @ p[-1]["W"] + p[-1]["b"][None])[:, 0] - y) ** 2)

    def torch_loss(p, x, y):
        h = x
        for layer in p[:-1]:
            h = (h @ layer["W"] + layer["b"]).tanh()
        return (((h @ p[-1]["W"] + p[-1]["b"])[:, 0] - y) ** 2).mean()

    return loss, torch_loss, params, (x, y)


def cnn(batch, channels=(3, 8, 8), side=12, hidden=8, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 10)
    c0, c1, c2 = channels
    flat = c2 * (side - 4) ** 2
    params = {
        "conv1": jax.random.normal(ks[0], (c1, c0, 3, 3)) / np.sqrt(9 * c0),
        "b1": 0.1 * jax.random.normal(ks[1], (c1,)),
        "conv2": jax.random.normal(ks[2], (c2, c1, 3, 3)) / np.sqrt(9 * c1),
        "b2": 0.1 * jax.random.normal(ks[3], (c2,)),
        "W": jax.random.normal(ks[4], (flat, hidden)) / np.sqrt(flat),
        "c": 0.1 * jax.random.normal(ks[5], (hidden,)),
        "v": jax.random.normal(ks[6], (hidden,)) / np.sqrt(hidden),
    }
    x, y = jax.random.normal(ks[7], (batch, c0, side, side)), jax.random.normal(ks[8], (batch,))

    def loss(p, x, y):
        h = jax.lax.conv_general_dilated(x, p["conv1"], (1, 1), "VALID")
        h = jnp.tanh(h + p["b1"][None, :, None, None])
        h = jax.lax.conv_general_dilated(h, p["conv2"], (1, 1), "VALID")
        h = jnp.tanh(h + p["b2"][None, :, None, None])
        h = jnp.tanh(h.reshape(h.shape[0], -1) @ p["W"] + p["c"][None])
        return jnp.mean((h @ p["v"] - y) ** 2)

    def torch_loss(p, x, y):
        import torch.nn.functional as F

        h = (F.conv2d(x, p["conv1"]) + p["b1"][None, :, None, None]).tanh()
        h = (F.conv2d(h, p["conv2"]) + p["b2"][None, :, None, None]).tanh()
        h = (h.reshape(h.shape[0], -1) @ p["W"] + p["c"]).tanh()
        return ((h @ p["v"] - y) ** 2).mean()

    return loss, torch_loss, params, (x, y)


def course_mlp(sizes, m, seed=0):
    """The course network: W[l] (n_l, n_{l-1}), b[l] (n_l, 1), X (n_0, m), tanh, sigmoid, cross-entropy."""
    ks = jax.random.split(jax.random.PRNGKey(seed), 2 * len(sizes) + 2)
    params = {}
    for i in range(1, len(sizes)):
        params[f"W{i}"] = jax.random.normal(ks[2 * i], (sizes[i], sizes[i - 1])) / np.sqrt(sizes[i - 1])
        params[f"b{i}"] = 0.1 * jax.random.normal(ks[2 * i + 1], (sizes[i], 1))
    X = jax.random.normal(ks[0], (sizes[0], m))
    Y = (jax.random.uniform(ks[1], (1, m)) > 0.5).astype(X.dtype)
    L = len(sizes) - 1

    def loss(p, X, Y):
        A = X
        for i in range(1, L):
            A = jnp.tanh(p[f"W{i}"] @ A + p[f"b{i}"])
        AL = jax.nn.sigmoid(p[f"W{L}"] @ A + p[f"b{L}"])
        return -jnp.mean(Y * jnp.log(AL) + (1 - Y) * jnp.log(1 - AL))

    return loss, params, (X, Y)


def course(opts):
    """numeric_grad with and without partial_eval on the course MLPs: first call and warm calls."""
    sizes = {"course_100-64-32-1": ((100, 64, 32, 1), 64), "course_200-128-64-10-1": ((200, 128, 64, 10, 1), 64)}
    if opts.quick:
        sizes = {"course_12-8-4-1": ((12, 8, 4, 1), 16)}
    results = {
        "machine": _machine(),
        "command": "python benchmarks/partial_eval.py --course"
        + (" --quick" if opts.quick else "")
        + f" --repeats {opts.repeats}",
        "models": {},
    }
    for name, (layers, m) in sizes.items():
        loss, params, args = course_mlp(layers, m)
        lay = jgc._tree.layout(params)
        row = {"n": lay.n, "examples": m}
        row["leaf_eval"] = dict(
            zip(lay.paths, jgc._partial.plan(loss, lay, params, args, jgc._stencils.get("central")), strict=True)
        )
        calls = {pe: functools.partial(jgc.numeric_grad, loss, params, *args, partial_eval=pe) for pe in (False, True)}
        grads, first, warm = {}, {}, {False: [], True: []}
        for pe in (False, True):
            grads[pe], first[pe] = _time(calls[pe])
        for _ in range(opts.repeats):
            for pe in (False, True):
                warm[pe].append(_time(calls[pe])[1])
        row["plain_first_s"], row["partial_first_s"] = first[False], first[True]
        row["plain_warm_s"], row["partial_warm_s"] = warm[False], warm[True]
        row["ratio_first"] = first[True] / first[False]
        row["ratio_warm_median"] = float(np.median([b / a for a, b in zip(warm[False], warm[True], strict=True)]))
        a, b = ravel_pytree(grads[False])[0], ravel_pytree(grads[True])[0]
        bound = 16 * float(jnp.finfo(a.dtype).eps) * max(1.0, abs(float(loss(params, *args)))) / 1e-6
        row["max_abs_diff"] = float(jnp.max(jnp.abs(a - b)))
        row["worst_diff_over_rounding_bound"] = row["max_abs_diff"] / bound
        exact = ravel_pytree(jax.grad(loss)(params, *args))[0]
        row["rel_error_plain_vs_grad"] = float(jgc.relative_error(a, exact))
        row["rel_error_partial_vs_grad"] = float(jgc.relative_error(b, exact))
        row["max_abs_partial_minus_grad"] = float(jnp.max(jnp.abs(b - exact)))
        results["models"][name] = row
        print(name, json.dumps(row), flush=True)
        out = opts.out or os.path.join(
            os.path.dirname(__file__), "results", "partial_eval_course" + ("_quick" if opts.quick else "") + ".json"
        )
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    print("saved", out)


def _machine():
    return _common.machine(device=True)


def models(quick):
    if quick:
        return {
            "mlp_first_layer": mlp((20, 12, 6, 3, 1), 8),
            "mlp_uniform_deep": mlp((12,) * 5 + (1,), 8),
            "cnn": cnn(4, channels=(2, 3, 3), side=6, hidden=3),
        }
    return {
        # the model: 200-128-64-10-1, 128 examples, n = 34,645; the first layer is 74% of n
        "mlp_first_layer": mlp((200, 128, 64, 10, 1), 128),
        # uniform widths: every layer about the same size, n = 12,737
        "mlp_uniform_deep": mlp((40,) * 8 + (1,), 32),
        # two 3x3 convolutions and a dense head on 12x12 images, n = 10,673
        "cnn": cnn(16, channels=(3, 8, 16), side=12, hidden=10),
        # first layer 784 -> 128 (n = 101,770), jgc paths only: the peers would take many minutes
        "mlp_first_layer_1e5": mlp((784, 128, 10, 1), 16),
    }


# ---------------------------------------------------------------- timing


def _time(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


def time_jgc(loss, params, args, partial_eval):
    f = jax.jit(lambda p: jgc.numeric_grad(loss, p, *args, partial_eval=partial_eval))
    compiled, t_compile = _time(lambda: f.lower(params).compile())
    grad, t_run = _time(lambda: compiled(params))
    return grad, t_compile, t_run


def time_scipy(loss, params, args):
    from scipy.optimize import check_grad

    theta, unravel = ravel_pytree(params)
    f = jax.jit(lambda t: loss(unravel(t), *args))
    g = jax.jit(lambda t: ravel_pytree(jax.grad(loss)(unravel(t), *args))[0])
    x0 = np.asarray(theta)
    f(x0).block_until_ready(), g(x0).block_until_ready()  # compile outside the timing
    t = time.perf_counter()
    err = check_grad(lambda t: float(f(t)), lambda t: np.asarray(g(t)), x0)
    return float(err), time.perf_counter() - t


def time_torch(torch_loss, params, args):
    import torch

    theta, unravel = ravel_pytree(params)
    shapes = [np.shape(v) for v in jax.tree_util.tree_leaves(params)]
    treedef = jax.tree_util.tree_structure(params)
    targs = [torch.from_numpy(np.array(a)) for a in args]

    def fn(flat):
        leaves, o = [], 0
        for s in shapes:
            size = int(np.prod(s))
            leaves.append(flat[o : o + size].reshape(s))
            o += size
        return torch_loss(jax.tree_util.tree_unflatten(treedef, leaves), *targs)

    x = torch.from_numpy(np.asarray(theta).copy()).requires_grad_(True)
    t = time.perf_counter()
    ok = torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=False)
    return bool(ok), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--torch", choices=["all", "first", "none"], default="first", help="models for torch gradcheck")
    ap.add_argument("--out", default=None)
    ap.add_argument("--course", action="store_true", help="the course MLPs: first and warm calls of numeric_grad")
    ap.add_argument("--repeats", type=int, default=3, help="warm calls per path with --course")
    ap.add_argument("--models", default=None, help="comma-separated names of the models to run (default: all)")
    opts = ap.parse_args()
    if opts.course:
        return course(opts)
    results = {
        "machine": _machine(),
        "command": "python benchmarks/partial_eval.py"
        + (" --quick" if opts.quick else "")
        + (" --no-peers" if opts.no_peers else "")
        + f" --torch {opts.torch}",
        "models": {},
    }
    chosen = models(opts.quick)
    if opts.models:
        chosen = {k: v for k, v in chosen.items() if k in opts.models.split(",")}
        results["command"] += f" --models {opts.models}"
    for name, (loss, torch_loss, params, args) in chosen.items():
        lay = jgc._tree.layout(params)
        row = {"n": lay.n, "leaves": dict(zip(lay.paths, (list(s) for s in lay.shapes), strict=True))}
        row["leaf_eval"] = dict(
            zip(lay.paths, jgc._partial.plan(loss, lay, params, args, jgc._stencils.get("central")), strict=True)
        )
        plain, row["plain_compile_s"], row["plain_run_s"] = time_jgc(loss, params, args, False)
        part, row["partial_compile_s"], row["partial_run_s"] = time_jgc(loss, params, args, True)
        a, b = ravel_pytree(plain)[0], ravel_pytree(part)[0]
        row["max_abs_diff"] = float(jnp.max(jnp.abs(a - b)))
        row["rel_diff"] = float(jgc.relative_error(plain, part))
        row["ratio_run"] = row["partial_run_s"] / row["plain_run_s"]
        row["ratio_total"] = (row["partial_compile_s"] + row["partial_run_s"]) / (row["plain_compile_s"] + row["plain_run_s"])
        if not opts.no_peers and not name.endswith("1e5"):
            row["scipy_check_grad_err"], row["scipy_s"] = time_scipy(loss, params, args)
            total = row["partial_compile_s"] + row["partial_run_s"]
            row["ratio_total_vs_scipy"] = total / row["scipy_s"]
            if opts.torch == "all" or (opts.torch == "first" and name == "mlp_first_layer"):
                row["torch_gradcheck_ok"], row["torch_s"] = time_torch(torch_loss, params, args)
                row["ratio_total_vs_torch"] = total / row["torch_s"]
        results["models"][name] = row
        print(name, json.dumps(row), flush=True)
        out = opts.out or os.path.join(
            os.path.dirname(__file__), "results", "partial_eval" + ("_quick" if opts.quick else "") + ".json"
        )
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:  # after every model: an interrupted run keeps what it measured
            json.dump(results, f, indent=1)
    print("saved", out)


if __name__ == "__main__":
    main()
