"""Verdict quality of jgc's defaults on the bug corpus (tests/corpus).

For float64 and float32 and every method, every correct model is checked over SEEDS
random points (a failure is a false alarm) and every planted bug over the same points
(a failure is a detection; the bug is localised when its wrong leaf fails). With
--sweep, the same is done for a grid of eps and tol around each default, which is how
the defaults in jgc/_stencils.py were chosen.

Run:  python benchmarks/verdicts.py [--seeds 5] [--sweep] [--out benchmarks/results/verdicts.json]
Prints a Markdown table (docs/verdicts.md holds the last one) and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from corpus import MODELS, all_variants  # noqa: E402

import jgc  # noqa: E402
from jgc import _stencils  # noqa: E402

METHODS = ["central", "forward", "five_point", "complex_step"]


def run_model(m, dtype, method, seeds, grid):
    """Per (eps, tol) in grid: (false alarms, correct checks, detected, localised, bug checks)."""
    loss, grad, names, leaves = all_variants(m)
    v = len(names)
    params, args = jax.vmap(lambda k: m.init(k, dtype))(jax.random.split(jax.random.key(2024), seeds))
    params, args = jax.tree.map(lambda x: jnp.tile(x, (v,) + (1,) * (x.ndim - 1)), (params, args))
    variant = jnp.repeat(jnp.arange(v, dtype=jnp.int32), seeds)
    check = jax.jit(
        jax.vmap(
            lambda p, i, a, eps, tol: jgc.check_grad(loss, grad, p, i, *a, method=method, eps=eps, tol=tol), (0, 0, 0, None, None)
        )
    )
    out = []
    for eps, tol in grid:
        res = check(params, variant, args, jnp.asarray(eps, dtype), jnp.asarray(tol, dtype))
        passed = np.asarray(res.passed).reshape(v, seeds)
        leaf_passed = [np.asarray(x).reshape(v, seeds) for x in jax.tree.leaves(res.leaf_passed)]
        det = loc = 0
        for i in range(1, v):
            wrong = leaf_passed[res.layout.paths.index(leaves[i])][i]
            det += int((~passed[i]).sum())
            loc += int((~passed[i] & ~wrong).sum())
        out.append(dict(false_alarms=int((~passed[0]).sum()), correct=seeds, detected=det, localised=loc, bugs=(v - 1) * seeds))
    return out


def run(dtype_name, method, seeds, sweep):
    dtype = jnp.dtype(dtype_name)
    eps0, tol0 = _stencils.default_eps(dtype, method), _stencils.default_tol(dtype, method)
    grid = [(eps0, tol0)]
    if sweep:
        grid += [(eps0 * f, tol0) for f in (0.01, 0.1, 10.0, 100.0)] + [(eps0, tol0 * f) for f in (0.01, 0.1, 10.0)]
    totals = [dict(false_alarms=0, correct=0, detected=0, localised=0, bugs=0) for _ in grid]
    per_model, skipped = {}, []
    for m in MODELS:
        try:
            rows = run_model(m, dtype, method, seeds, grid)
        except TypeError as e:  # complex_step on a loss that is not complex-safe
            skipped.append(f"{m.name}: {str(e)[:120]}")
            continue
        per_model[m.name] = rows[0]
        for t, r in zip(totals, rows, strict=True):
            for k in t:
                t[k] += r[k]
    return dict(
        dtype=dtype_name,
        method=method,
        eps=eps0,
        tol=tol0,
        seeds=seeds,
        default=totals[0],
        per_model=per_model,
        skipped=skipped,
        sweep=[dict(eps=e, tol=t, **r) for (e, t), r in zip(grid, totals, strict=True)] if sweep else [],
    )


def pct(a, b):
    return f"{100 * a / b:.1f}% ({a}/{b})" if b else "n/a"


def table(results):
    lines = [
        "| dtype | method | eps | tol | false alarms | detected | localised |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d = r["default"]
        lines.append(
            f"| {r['dtype']} | {r['method']} | {r['eps']:.0e} | {r['tol']:.0e} | {pct(d['false_alarms'], d['correct'])} | "
            f"{pct(d['detected'], d['bugs'])} | {pct(d['localised'], d['bugs'])} |"
        )
    return "\n".join(lines)


def sweep_table(results):
    lines = ["| dtype | method | eps | tol | false alarms | detected | localised |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for s in r["sweep"]:
            lines.append(
                f"| {r['dtype']} | {r['method']} | {s['eps']:.0e} | {s['tol']:.0e} | {pct(s['false_alarms'], s['correct'])} | "
                f"{pct(s['detected'], s['bugs'])} | {pct(s['localised'], s['bugs'])} |"
            )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sweep", action="store_true", help="also vary eps and tol around each default")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verdicts.json"))
    a = ap.parse_args()
    t0 = time.time()
    results = []
    for dt in a.dtypes.split(","):
        for method in a.methods.split(","):
            t = time.time()
            with jax.enable_x64(dt == "float64"):
                r = run(dt, method, a.seeds, a.sweep)
            r["seconds"] = round(time.time() - t, 1)
            results.append(r)
            d = r["default"]
            print(
                f"{dt} {method}: false alarms {d['false_alarms']}/{d['correct']}, detected {d['detected']}/{d['bugs']}, "
                f"localised {d['localised']}/{d['bugs']} ({r['seconds']} s)",
                flush=True,
            )
            for name, row in r["per_model"].items():
                if row["false_alarms"] or row["detected"] < row["bugs"] or row["localised"] < row["bugs"]:
                    print(f"    {name}: {row}")
            for s in r["skipped"]:
                print(f"    skipped {s}")
            save(a.out, results, t0)  # after every configuration, so a long run keeps what it measured
    print()
    print(f"{len(MODELS)} model families, {sum(len(m.bugs) for m in MODELS)} planted bugs, {a.seeds} seeds each")
    print(table(results))
    if a.sweep:
        print()
        print(sweep_table(results))
    save(a.out, results, t0)
    print(f"saved {a.out}")


def save(out, results, t0):
    meta = dict(
        command="python " + " ".join(sys.argv),
        jax=jax.__version__,
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        models=len(MODELS),
        bugs=sum(len(m.bugs) for m in MODELS),
        seconds=round(time.time() - t0, 1),
    )
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(dict(meta=meta, results=results), indent=1))


if __name__ == "__main__":
    main()
