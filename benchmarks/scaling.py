"""Device scaling: the same checks with 1, 2 and 4 simulated host devices (subprocesses).

Run: python benchmarks/scaling.py [--quick]   (writes benchmarks/results/scaling.json)

XLA_FLAGS=--xla_force_host_platform_device_count=D splits the CPU into D devices; probes
(and, inside check_seeds, every seed's probes) are spread over them by jgc's engine. On a
machine with few cores the simulated devices share those cores, so this measures the
overhead and correctness of the sharded layout more than a speed-up; on a multi-GPU
machine the same code spreads the probes over the GPUs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402

QUICK = "--quick" in sys.argv
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import jax, numpy as np
import _common as M
import jgc

def best(fn, repeat=2):
    return M.first_and_best(fn, repeat)[2]

out = {"devices": jax.device_count()}
with jax.enable_x64(True):
    n = int(sys.argv[1])
    p, y = M.wide_problem(n)
    full = lambda: jgc.check_grad(M.wide_loss, M.wide_grad, p, y)
    out["full_n"], out["full_seconds"] = n, best(full)
    out["full_rel_error"] = float(full().rel_error)
    init, (x, yy) = M.mlp_init, M.data(jax.random.key(1), 8, 4)
    keys = jax.random.split(jax.random.key(0), int(sys.argv[2]))
    seeds = lambda: jgc.check_seeds(M.mlp_loss, M.mlp_grad, init, keys, x, yy)
    out["seeds"], out["seeds_seconds"] = len(keys), best(seeds)
    res = seeds()
    out["seeds_rel_error"] = np.asarray(res.rel_error).tolist()
    out["seeds_passed"] = np.asarray(res.passed).tolist()
print("RESULT" + json.dumps(out))
"""


def main():
    n, seeds = (2000, 8) if QUICK else (20000, 32)
    rows = []
    for d in (1, 2, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(seeds)], env=env, cwd=ROOT, capture_output=True, text=True
        )
        if proc.returncode:
            sys.exit(proc.stderr)
        (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
        rows.append(json.loads(line[len("RESULT") :]))
        print({k: v for k, v in rows[-1].items() if k not in ("seeds_rel_error", "seeds_passed")})
    same_full = len({r["full_rel_error"] for r in rows}) == 1
    # a correct gradient's rel_error is rounding noise (~1e-9), so compare it in absolute terms against tol = 1e-6
    max_seed_diff = max(abs(a - b) for r in rows for a, b in zip(r["seeds_rel_error"], rows[0]["seeds_rel_error"], strict=True))
    same_verdicts = all(r["seeds_passed"] == rows[0]["seeds_passed"] for r in rows)
    result = dict(
        machine=_common.machine(),
        note="No GPU was available for this task: simulated host devices sharing a 2-core CPU.",
        full_rel_error_identical_across_device_counts=same_full,
        seeds_rel_error_max_absolute_difference=max_seed_diff,
        seeds_verdicts_identical=same_verdicts,
        rows=rows,
    )
    path = Path(__file__).parent / "results" / ("scaling_quick.json" if QUICK else "scaling.json")
    _common.write_json(path, result)
    print(
        "wrote",
        path,
        "| identical full results:",
        same_full,
        "| max seed rel_error difference:",
        max_seed_diff,
        "| same verdicts:",
        same_verdicts,
    )


if __name__ == "__main__":
    main()
