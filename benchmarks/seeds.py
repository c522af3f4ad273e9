"""Many seeds: one batched `jgc.check_seeds` call against a Python loop of single checks.

Run: python benchmarks/seeds.py [--quick]   (writes benchmarks/results/seeds.json)

Models (float64, full check): the classic course's gradient-checking network (3-5-3,
38 parameters) and an MLP (8-32-32-4, 1,572 parameters). For 1, 16 and 256 seeds:
`check_seeds` (init and check vmapped over the keys in one compiled call) against
`for key in keys: check_grad(loss, grad, init(key), ...)` (each check jitted; compiled
once, reused). Times are the best of 2 warm runs (1 for the 256-seed loop); the first
call (compilation included) is reported apart.
"""

import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as M  # noqa: E402

import jgc  # noqa: E402

QUICK = "--quick" in sys.argv


def best(fn, repeat=2):
    """(first call's seconds, best of `repeat` more)."""
    _, first, warm = M.first_and_best(fn, repeat)
    return first, warm


def main():
    rows = []
    seeds = [1, 16] if QUICK else [1, 16, 256]
    with jax.enable_x64(True):
        models = {
            "classic 3-5-3": (M.classic_init, M.data(jax.random.key(1), 3, 3, m=5)),
            "MLP 8-32-32-4": (M.mlp_init, M.data(jax.random.key(1), 8, 4)),
        }
        for name, (init, (x, y)) in models.items():
            for s in seeds:
                keys = jax.random.split(jax.random.key(0), s)
                batched = lambda: jgc.check_seeds(M.mlp_loss, M.mlp_grad, init, keys, x, y)  # noqa: B023
                init_jit = jax.jit(init)  # the loop's initialization is compiled too, to be fair to it
                loop = lambda: [jgc.check_grad(M.mlp_loss, M.mlp_grad, init_jit(k), x, y) for k in keys]  # noqa: B023
                t0 = time.perf_counter()
                res = jax.block_until_ready(batched())
                compile_seconds = time.perf_counter() - t0
                assert bool(np.all(res.passed)), res.report()
                _, b_warm = best(batched)
                l_first, l_warm = best(loop, repeat=1 if s == 256 else 2)
                n = sum(v.size for v in jax.tree.leaves(init(keys[0])))
                row = dict(
                    model=name,
                    n=n,
                    seeds=s,
                    num_evals_per_seed=int(np.asarray(res.num_evals).reshape(-1)[0]),
                    batched_seconds=b_warm,
                    batched_first_call_seconds=compile_seconds,
                    loop_seconds=l_warm,
                    loop_first_call_seconds=l_first,
                    speedup=l_warm / b_warm,
                )
                rows.append(row)
                print(row)
    result = dict(
        machine=M.machine(),
        device=str(jax.devices()[0]),
        note="No GPU was available for this task: CPU timings on a shared 2-core machine.",
        rows=rows,
    )
    path = Path(__file__).parent / "results" / ("seeds_quick.json" if QUICK else "seeds.json")
    M.write_json(path, result)
    print("wrote", path)


if __name__ == "__main__":
    main()
