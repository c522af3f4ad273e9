"""Measure relative errors of correct and buggy gradients, to choose default eps and tol.

For each dtype and step eps, over many seeds of two models (the classic relu/sigmoid
network and a tanh MLP with softmax cross-entropy and L2), record
  - correct:  the largest rel_error of the correct backward pass (false alarms above tol),
  - bugs:     the smallest rel_error among planted bugs (missed bugs below tol):
              one coordinate ×1.5 in each leaf, and a forgotten L2 term.
A good default tol sits between the two; a good eps makes the gap widest.

    python benchmarks/defaults.py            # writes benchmarks/results/defaults.json
"""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import course_network as course  # noqa: E402
import seeds as mlp  # noqa: E402

import jgc  # noqa: E402

SEEDS = 32


def _bugs(grad_fn, params, l2_leaves=()):
    """Planted bugs: the largest coordinate of each leaf ×1.5 (so the bug is never a 0 × 1.5)."""
    bugs = {}
    for path in [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]:

        def bad(p, *a, path=path):
            g = grad_fn(p, *a)

            def plant(key, v):
                if jax.tree_util.keystr(key) != path:
                    return v
                flat = v.reshape(-1)
                return flat.at[jnp.argmax(jnp.abs(flat))].multiply(1.5).reshape(v.shape)

            return jax.tree_util.tree_map_with_path(plant, g)

        bugs[f"{path}[argmax]×1.5"] = bad
    return bugs


def _models(dtype):
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    X = jax.random.normal(kx, (4, 8), dtype)
    Y = (jax.random.uniform(ky, (1, 8)) > 0.5).astype(dtype)
    cast = lambda tree: jax.tree_util.tree_map(lambda v: v.astype(dtype), tree)
    x = jax.random.normal(kx, (16, mlp.SIZES[0]), dtype)
    y = jax.nn.one_hot(jax.random.randint(ky, (16,), 0, mlp.SIZES[-1]), mlp.SIZES[-1], dtype=dtype)

    def forgot_l2(p, x, y):
        g = mlp.grad(p, x, y)
        return [{"W": gl["W"] - 2e-3 * pl["W"], "b": gl["b"]} for gl, pl in zip(g, p)]

    yield "course (relu, sigmoid)", lambda k: cast(course.init(k)), course.cost, course.backward, (X, Y), {}
    yield "mlp (tanh, softmax, L2)", lambda k: cast(mlp.init(k)), mlp.loss, mlp.grad, (x, y), {"forgot L2 (λ=1e-3)": forgot_l2}


def measure(dtype, eps):
    out = {}
    keys = jax.random.split(jax.random.PRNGKey(1), SEEDS)
    for name, init, loss, grad, args, extra in _models(dtype):

        def run(g, loss=loss, init=init, args=args):
            return jax.vmap(lambda k: jgc.check_grad(loss, g, init(k), *args, eps=eps, tol=1.0).rel_error)(keys)

        correct = np.asarray(run(grad))
        bugs = {**_bugs(grad, init(keys[0])), **extra}
        bug_errors = {b: np.asarray(run(g)) for b, g in bugs.items()}
        out[name] = {
            "correct_max": float(np.nanmax(correct)),
            "correct_median": float(np.nanmedian(correct)),
            "correct_nonfinite": int((~np.isfinite(correct)).sum()),
            "bug_min": float(min(np.nanmin(e) for e in bug_errors.values())),
            "bug_min_per_bug": {b: float(np.nanmin(e)) for b, e in bug_errors.items()},
        }
    return out


def main():
    results = {}
    for dtype, eps_list in (("float64", [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]), ("float32", [1e-1, 3e-2, 1e-2, 3e-3, 1e-3])):
        with jax.enable_x64(dtype == "float64"):
            for eps in eps_list:
                r = measure(jnp.dtype(dtype), eps)
                results[f"{dtype} eps={eps:g}"] = r
                for model, v in r.items():
                    print(
                        f"{dtype} eps={eps:<6g} {model:<26} correct: max {v['correct_max']:.1e} (median {v['correct_median']:.1e}, {v['correct_nonfinite']} non-finite)   bugs: min {v['bug_min']:.1e}"
                    )
    path = pathlib.Path(__file__).parent / "results" / "defaults.json"
    path.write_text(json.dumps({"seeds": SEEDS, "jax": jax.__version__, "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
