"""Directional, sampled and full checks: verdict agreement on planted bugs, cost and time.

Run: python benchmarks/modes.py [--quick]   (writes benchmarks/results/modes.json)

1. agreement: planted bugs of growing severity on an MLP (float64); the full check's
   verdict against the directional (num=8) and sampled (coords=64) verdicts, 4 keys each.
2. cost: loss evaluations and time of each mode at n = 1e4, 1e5, 1e6 on a cheap loss.
   The full check at 1e6 (2e6 evaluations) is too slow for 2 cores: it is estimated as
   num_evals x the per-evaluation time measured by the sampled check at the same n.
3. locate: one planted wrong coordinate among 1e6, evaluations and time.
"""

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as M  # noqa: E402

import jgc  # noqa: E402

QUICK = "--quick" in sys.argv


def loss(params, x, y, s):
    return M.mlp_loss(params, x, y)


def planted(kind):
    """A wrong gradient: `kind` of bug with severity s (an argument, so one compilation per kind)."""

    def grad(params, x, y, s):
        g = M.mlp_grad(params, x, y)
        if kind == "scale_leaf":  # one leaf's gradient off by a factor 1 + s
            g[1]["b"] = g[1]["b"] * (1 + s)
        elif kind == "noise_leaf":  # noise of relative size s on the largest leaf
            w = g[1]["W"]
            g[1]["W"] = w + s * jnp.sqrt(jnp.mean(w**2)) * jax.random.normal(jax.random.key(3), w.shape, w.dtype)
        elif kind == "one_coordinate":  # one coordinate off by s times the gradient's RMS
            rms = jnp.sqrt(sum(jnp.mean(v**2) for v in jax.tree.leaves(g)) / len(jax.tree.leaves(g)))
            g[0]["W"] = g[0]["W"].at[2, 3].add(s * rms)
        elif kind == "missing_l2":  # the regularization term of one layer forgotten, scaled by s
            g[2]["W"] = g[2]["W"] - s * 1e-3 * params[2]["W"]
        return g

    return grad


def agreement():
    kinds = ["scale_leaf", "noise_leaf", "one_coordinate", "missing_l2"]
    severities = np.logspace(-8, 1, 10 if QUICK else 19)
    keys = range(2 if QUICK else 4)
    params = M.mlp_init(jax.random.key(0))
    x, y = M.data(jax.random.key(1), 8, 4)
    rows = []
    for kind in kinds:
        g = planted(kind)
        for s in severities:
            sv = jnp.asarray(s)
            full = jgc.check_grad(loss, g, params, x, y, sv)
            for k in keys:
                d = jgc.check_directions(loss, g, params, x, y, sv, key=jax.random.key(k), num=8)
                c = jgc.check_grad(loss, g, params, x, y, sv, coords=64, key=jax.random.key(k))
                rows.append(
                    dict(
                        kind=kind,
                        severity=float(s),
                        key=k,
                        full_passed=bool(full.passed),
                        full_rel_error=float(full.rel_error),
                        directions_passed=bool(d.passed),
                        directions_rel_error=float(d.rel_error),
                        sampled_passed=bool(c.passed),
                        sampled_rel_error=float(c.rel_error),
                    )
                )
    summary = {}
    for mode in ("directions", "sampled"):
        agree = [r[f"{mode}_passed"] == r["full_passed"] for r in rows]
        missed = [r for r in rows if r[f"{mode}_passed"] and not r["full_passed"]]
        false_alarm = [r for r in rows if not r[f"{mode}_passed"] and r["full_passed"]]
        ratio = [r[f"{mode}_rel_error"] / r["full_rel_error"] for r in rows if r["full_rel_error"] > 0]
        summary[mode] = dict(
            cases=len(rows),
            agree=int(sum(agree)),
            agreement=float(np.mean(agree)),
            missed_bugs=len(missed),
            missed_kinds=sorted({r["kind"] for r in missed}),
            false_alarms=len(false_alarm),
            rel_error_ratio_median=float(np.median(ratio)),
            rel_error_ratio_p05_p95=[float(np.percentile(ratio, 5)), float(np.percentile(ratio, 95))],
        )
        print(f"{mode}: {summary[mode]}")
    n = sum(v.size for v in jax.tree.leaves(params))
    return dict(model="MLP 8-32-32-4 tanh, float64", n=n, summary=summary, rows=rows)


def timed(fn, repeat=2):
    """(output, best of `repeat` calls after a first, compiling one)."""
    out, _, best = M.first_and_best(fn, repeat)
    return out, best


def cost():
    rows = []
    for n in [10**4, 10**5] if QUICK else [10**4, 10**5, 10**6]:
        with jax.enable_x64(True):
            p, y = M.wide_problem(n)
            modes = {
                "directions (num=8)": lambda: jgc.check_directions(M.wide_loss, M.wide_grad, p, y, key=jax.random.key(0)),  # noqa: B023
                "sampled (coords=256)": lambda: jgc.check_grad(M.wide_loss, M.wide_grad, p, y, coords=256, key=jax.random.key(0)),  # noqa: B023
            }
            if n <= 10**5:
                modes["full"] = lambda: jgc.check_grad(M.wide_loss, M.wide_grad, p, y)  # noqa: B023
            per_eval = None
            for name, fn in modes.items():
                res, t = timed(fn, repeat=1 if n >= 10**5 and name == "full" else 2)
                rows.append(
                    dict(n=n, mode=name, num_evals=int(res.num_evals), seconds=t, passed=bool(res.passed), estimated=False)
                )
                if name.startswith("sampled"):
                    per_eval = t / int(res.num_evals)
                print(rows[-1])
            if n > 10**5:
                rows.append(dict(n=n, mode="full", num_evals=2 * n, seconds=2 * n * per_eval, passed=None, estimated=True))
                print(rows[-1])
    return rows


def locate_bench():
    out = []
    for n in [10**5] if QUICK else [10**5, 10**6]:
        with jax.enable_x64(True):
            p, y = M.wide_problem(n, leaves=2)
            bad = ("w1", n // 2 - 12345)

            def grad(p, y):
                g = M.wide_grad(p, y)
                g[bad[0]] = g[bad[0]].at[bad[1]].multiply(2.0)  # noqa: B023
                return g

            t = time.perf_counter()
            found = jgc.locate(M.wide_loss, grad, p, y, key=jax.random.key(0))
            seconds = time.perf_counter() - t
            hit = [(c.path, c.index) for c in found.wrong] == [(f"['{bad[0]}']", (bad[1],))]
            out.append(dict(n=n, num_evals=found.num_evals, levels=found.levels, seconds=seconds, found_exactly_the_planted=hit))
            print(out[-1])
    return out


def main():
    result = dict(
        machine=M.machine(),
        device=str(jax.devices()[0]),
        note="No GPU was available for this task: CPU timings on a shared 2-core machine.",
    )
    with jax.enable_x64(True):
        result["agreement"] = agreement()
    result["cost"] = cost()
    result["locate"] = locate_bench()
    path = Path(__file__).parent / "results" / ("modes_quick.json" if QUICK else "modes.json")
    M.write_json(path, result)
    print("wrote", path)


if __name__ == "__main__":
    main()
