"""Time a full per-coordinate gradient check: jgc against the ways people do it today.

On float64 tanh MLPs (n ≈ 10³ and 10⁴ parameters, 64 examples), each method runs in its
own subprocess (so peak memory is its own) and checks the same hand-written gradient:

  jgc (first call)   jgc.check_grad, including tracing and XLA compilation
  jgc (warm)         the same call again (compiled code cached)
  course loop        the course's Python loop over coordinates: θ±ε·e_i, a jitted loss call each
  scipy check_grad   scipy.optimize.check_grad (forward differences: n+1 loss calls)
  2n loss evals      the bare cost: one warm jitted loss call, timed, × 2n

    python benchmarks/full_check.py            # writes benchmarks/results/full_check.json
"""

import json
import pathlib
import platform
import resource
import subprocess
import sys
import time

SIZES = {"n≈1e3": (20, 32, 16, 1), "n≈1e4": (100, 64, 48, 1)}
METHODS = ["jgc", "course loop", "scipy check_grad", "2n loss evals"]
M = 64


def _setup(sizes):
    import functools

    import jax

    jax.config.update("jax_enable_x64", True)  # this subprocess only
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _common  # the tanh MLP (row convention), here with zero biases and no L2

    loss = functools.partial(_common.mlp_loss, l2=0.0)
    grad = functools.partial(_common.mlp_grad, l2=0.0)
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x, y = jax.random.normal(kx, (M, sizes[0])), jax.random.normal(ky, (M, sizes[-1]))
    return _common.mlp_init(jax.random.PRNGKey(1), sizes, bias_scale=0.0), x, y, loss, grad


def run_one(method, size):
    import jax
    import numpy as np
    from jax.flatten_util import ravel_pytree

    params, x, y, loss, grad = _setup(SIZES[size])
    theta, unravel = ravel_pytree(params)
    n = theta.size
    flat_loss = jax.jit(lambda t: loss(unravel(t), x, y))
    flat_grad = jax.jit(lambda t: ravel_pytree(grad(unravel(t), x, y))[0])
    out = {"method": method, "size": size, "n": int(n)}
    if method == "jgc":
        import jgc

        t0 = time.perf_counter()
        res = jgc.check_grad(loss, grad, params, x, y)
        jax.block_until_ready(res.rel_error)  # a NumPy array on concrete inputs (the verdict runs on the host)
        out["first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = jgc.check_grad(loss, grad, params, x, y)
        jax.block_until_ready(res.rel_error)  # a NumPy array on concrete inputs (the verdict runs on the host)
        out["warm_s"] = time.perf_counter() - t0
        out["rel_error"] = float(res.rel_error)
        out["num_evals"] = int(res.num_evals)
    elif method == "course loop":
        eps = 1e-7
        th = np.asarray(theta)
        flat_loss(theta).block_until_ready()
        t0 = time.perf_counter()
        approx = np.zeros(n)
        for i in range(n):
            plus, minus = th.copy(), th.copy()
            plus[i] += eps
            minus[i] -= eps
            approx[i] = (float(flat_loss(plus)) - float(flat_loss(minus))) / (2 * eps)
        g = np.asarray(flat_grad(theta))
        out["warm_s"] = time.perf_counter() - t0
        out["rel_error"] = float(np.linalg.norm(approx - g) / (np.linalg.norm(approx) + np.linalg.norm(g)))
        out["num_evals"] = 2 * n
    elif method == "scipy check_grad":
        from scipy.optimize import check_grad

        f = lambda t: float(flat_loss(t))
        g = lambda t: np.asarray(flat_grad(t))
        f(theta), g(theta)
        t0 = time.perf_counter()
        err = check_grad(f, g, np.asarray(theta))
        out["warm_s"] = time.perf_counter() - t0
        out["abs_error"] = float(err)
        out["num_evals"] = n + 1
    else:
        flat_loss(theta).block_until_ready()
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            flat_loss(theta).block_until_ready()
        out["warm_s"] = (time.perf_counter() - t0) / reps * 2 * n
        out["num_evals"] = 2 * n
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main():
    rows = []
    for size in SIZES:
        for method in METHODS:
            proc = subprocess.run([sys.executable, __file__, "--one", method, size], capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            first = f"{row['first_s']:8.2f}" if "first_s" in row else "       -"
            print(
                f"{size:<6} n={row['n']:<6} {method:<17} first {first} s   warm {row['warm_s']:8.3f} s   evals {row['num_evals']:>6}   peak RSS {row['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(), "examples": M}
    path = pathlib.Path(__file__).parent / "results" / "full_check.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2], sys.argv[3])))
    else:
        main()
