"""Verdict quality of jgc's defaults on the bug corpus (tests/corpus): the model corpus and the ops corpus.

For float64 and float32 and every method, every correct model is checked over SEEDS
random points (a failure is a false alarm; when the result has an `inconclusive` field,
an inconclusive check is counted apart, not as a false alarm) and every planted bug over
the same points (a check that does not pass is a detection; the bug is localised when
its wrong leaf fails too). Bug checks are split by the bug's size at that point: its
relative error on its wrong leaf, ‖bad − true‖ / (‖bad‖ + ‖true‖) with true = jax.grad in
float64 (gross ≥ 1e-2, moderate 1e-3 … 1e-2, subtle < 1e-3). With --sweep, the same is
done for a grid of eps and tol around each default, which is how the defaults in
jgc/_stencils.py were chosen.

Only the public API is used: `jgc.check_grad` and the result's `passed`, `leaf_passed`,
`layout.paths` (and `inconclusive` when it exists). Every variant (correct and bugs) and
seed of a model is one vmapped check, so each model compiles once per configuration;
ops with the same params shapes share one check (`corpus.group_variants`, under `jax.lax.map`).

Run:  python benchmarks/verdicts.py [--seeds 5] [--quick] [--corpus models,ops] [--models 'layernorm*,conv*']
          [--dtypes float64,float32] [--methods central,...] [--sweep] [--out benchmarks/results/verdicts.json]
Prints Markdown tables (docs/verdicts.md holds the last ones) and saves JSON.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import corpus  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jgc  # noqa: E402
from jgc import _stencils  # noqa: E402

METHODS = ["central", "forward", "five_point", "complex_step"]
CORPORA = {"models": (corpus.MODELS, corpus.NOT_COMPLEX_SAFE), "ops": (corpus.OPS, corpus.OPS_NOT_COMPLEX_SAFE)}
COUNTS = ("false_alarms", "inconclusive", "correct") + tuple(
    f"{c}_{k}" for c in corpus.CATEGORIES for k in ("detected", "localised", "inconclusive", "bugs")
)


_BATCHES: dict = {}


def run_group(models, dtype, method, seeds, grid):
    """One compiled check over every variant of every model in `models` (one model, or ops with
    the same params shapes) at `seeds` points.

    Returns, per (eps, tol) in grid, a dict model name -> per-variant rows (bug, and per seed:
    its size and size category, passed, inconclusive, localised).
    """
    # the points (and the bug sizes measured there) depend on the dtype only: laid out once for every method
    cache_key = (tuple(m.name for m in models), jnp.dtype(dtype).name, seeds)
    if cache_key not in _BATCHES:
        _BATCHES[cache_key] = corpus.variants_at(models, dtype, jax.random.split(jax.random.key(2024), seeds))
    b = _BATCHES[cache_key]
    check = jax.jit(
        lambda p, i, a, eps, tol: b.map(
            lambda p, i, a: jgc.check_grad(b.loss_fn, b.grad_fn, p, i, a, method=method, eps=eps, tol=tol)
        )(p, i, a)
    )
    out = []
    for eps, tol in grid:
        o = corpus.outcome(b, check(b.params, b.variant, b.args, jnp.asarray(eps, dtype), jnp.asarray(tol, dtype)))
        rows = collections.defaultdict(list)
        for i, (model, bug) in enumerate(b.names):
            rows[model].append(
                dict(
                    bug=bug,
                    size=None if bug == "correct" else [float(x) for x in o.size[i]],
                    category=[None if bug == "correct" else corpus.size_category(x) for x in o.size[i]],
                    passed=[bool(x) for x in o.passed[i]],
                    inconclusive=[bool(x) for x in o.inconclusive[i]],
                    localised=[bool(x) for x in o.localised[i]],
                )
            )
        out.append(dict(rows))
    return out


def tally(rows_by_model):
    """Counts over every model's variant rows (see COUNTS)."""
    t = dict.fromkeys(COUNTS, 0)
    for rows in rows_by_model.values():
        for r in rows:
            for s, cat in enumerate(r["category"]):
                passed, inc = r["passed"][s], r["inconclusive"][s]
                if r["bug"] == "correct":
                    t["correct"] += 1
                    t["inconclusive"] += inc
                    t["false_alarms"] += (not passed) and not inc
                else:
                    t[f"{cat}_bugs"] += 1
                    t[f"{cat}_detected"] += not passed
                    t[f"{cat}_inconclusive"] += inc
                    t[f"{cat}_localised"] += r["localised"][s]
    return t


def select(kind, patterns, dtype_name="float64", method="central"):
    """The corpus' models to run (matching `patterns`), and those skipped with the reason:
    float64-only losses in float32, losses that are not complex-safe for complex_step."""
    models, not_complex = CORPORA[kind]
    if patterns:
        models = [m for m in models if any(fnmatch.fnmatch(m.name, p) for p in patterns)]
    skipped = [f"{m.name}: float64 only" for m in models if m.name in corpus.FLOAT64_ONLY and dtype_name != "float64"]
    if method == "complex_step":
        skipped += [f"{m.name}: not complex-safe" for m in models if m.name in not_complex]
    return [m for m in models if not any(s.startswith(m.name + ":") for s in skipped)], skipped


def run(kind, dtype_name, method, seeds, sweep, patterns):
    dtype = jnp.dtype(dtype_name)
    eps0, tol0 = _stencils.nominal_eps(dtype, method), _stencils.default_tol(dtype, method)
    grid = [(eps0, tol0)]
    if sweep:
        grid += [(eps0 * f, tol0) for f in (0.01, 0.1, 10.0, 100.0)] + [(eps0, tol0 * f) for f in (0.01, 0.1, 10.0)]
    models, skipped = select(kind, patterns, dtype_name, method)
    groups = collections.defaultdict(list)
    for m in models:
        groups[corpus.params_signature(m, dtype) if kind == "ops" else m.name].append(m)
    per_grid = [dict() for _ in grid]
    for group in groups.values():
        try:
            results = run_group(group, dtype, method, seeds, grid)
        except TypeError as e:  # complex_step on a loss that is not complex-safe and not listed as such
            skipped.append(f"{', '.join(m.name for m in group)}: {str(e)[:120]}")
            continue
        for acc, rows in zip(per_grid, results, strict=True):
            acc.update(rows)
    return dict(
        corpus=kind,
        dtype=dtype_name,
        method=method,
        eps=eps0,
        tol=tol0,
        seeds=seeds,
        default=tally(per_grid[0]),
        rows=per_grid[0],
        skipped=skipped,
        sweep=[dict(eps=e, tol=t, **tally(r)) for (e, t), r in zip(grid, per_grid, strict=True)] if sweep else [],
    )


def pct(a, b):
    return f"{100 * a / b:.0f}% ({a}/{b})" if b else "–"


def table(results):
    """One row per (corpus, dtype, method): false alarms, inconclusive correct checks, and per size
    category detected / localised (and, when the results have it, inconclusive) bug checks."""
    has_inc = any(
        r["default"]["inconclusive"] or any(r["default"][f"{c}_inconclusive"] for c in corpus.CATEGORIES) for r in results
    )
    head = ["corpus", "dtype", "method", "eps", "tol", "false alarms"] + (["correct inconclusive"] if has_inc else [])
    for c in corpus.CATEGORIES:
        head += [f"{c} detected", f"{c} localised"] + ([f"{c} inconclusive"] if has_inc else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        d = r["default"]
        cells = [r["corpus"], r["dtype"], r["method"], f"{r['eps']:.0e}", f"{r['tol']:.0e}", pct(d["false_alarms"], d["correct"])]
        cells += [pct(d["inconclusive"], d["correct"])] if has_inc else []
        for c in corpus.CATEGORIES:
            n = d[f"{c}_bugs"]
            cells += [pct(d[f"{c}_detected"], n), pct(d[f"{c}_localised"], n)] + (
                [pct(d[f"{c}_inconclusive"], n)] if has_inc else []
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(results):
    lines = [
        "| corpus | dtype | method | eps | tol | false alarms | " + " | ".join(f"{c} detected" for c in corpus.CATEGORIES) + " |",
        "|" + "---|" * 9,
    ]
    for r in results:
        for s in r["sweep"]:
            lines.append(
                f"| {r['corpus']} | {r['dtype']} | {r['method']} | {s['eps']:.0e} | {s['tol']:.0e} | {pct(s['false_alarms'], s['correct'])} | "
                + " | ".join(pct(s[f"{c}_detected"], s[f"{c}_bugs"]) for c in corpus.CATEGORIES)
                + " |"
            )
    return "\n".join(lines)


def misses(r):
    """Lines naming each correct model with a false alarm and each bug not detected on every seed."""
    out = []
    for model, rows in r["rows"].items():
        for row in rows:
            if row["bug"] == "correct":
                bad = [not p and not i for p, i in zip(row["passed"], row["inconclusive"])]
                what = "false alarm"
            else:
                bad = row["passed"]
                what = "missed (" + ", ".join(f"{s:.0e}" for s, b in zip(row["size"], bad) if b) + ")"
            if any(bad):
                out.append(f"    {model}/{row['bug']}: {what} {sum(bad)}/{len(bad)}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="central only, 2 seeds")
    ap.add_argument("--corpus", default="models,ops", help="models, ops or both")
    ap.add_argument("--models", default="", help="comma-separated name patterns (fnmatch) of models or ops to run")
    ap.add_argument("--sweep", action="store_true", help="also vary eps and tol around each default")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--verbose", action="store_true", help="list every false alarm and missed bug")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verdicts.json"))
    a = ap.parse_args()
    if a.quick:
        a.methods, a.seeds = "central", min(a.seeds, 2)
    patterns = [p for p in a.models.split(",") if p]
    t0 = time.time()
    results = []
    for kind in a.corpus.split(","):
        for dt in a.dtypes.split(","):
            for method in a.methods.split(","):
                t = time.time()
                with jax.enable_x64(dt == "float64"):
                    r = run(kind, dt, method, a.seeds, a.sweep, patterns)
                r["seconds"] = round(time.time() - t, 1)
                results.append(r)
                d = r["default"]
                print(
                    f"{kind} {dt} {method}: false alarms {d['false_alarms']}/{d['correct']}, inconclusive {d['inconclusive']}, "
                    + ", ".join(f"{c} detected {d[f'{c}_detected']}/{d[f'{c}_bugs']}" for c in corpus.CATEGORIES)
                    + f" ({r['seconds']} s)",
                    flush=True,
                )
                if a.verbose or kind == "models":
                    print("\n".join(misses(r)))
                for s in r["skipped"] if a.verbose else []:
                    print(f"    skipped {s}")
                save(a.out, results, t0)  # after every configuration, so a long run keeps what it measured
    print()
    for kind in a.corpus.split(","):
        models, _ = select(kind, patterns)
        print(f"{kind}: {len(models)} models, {sum(len(m.bugs) for m in models)} planted bugs, {a.seeds} seeds each")
    print(table(results))
    if a.sweep:
        print()
        print(sweep_table(results))
    save(a.out, results, t0)
    print(f"saved {a.out} ({time.time() - t0:.0f} s)")


def save(out, results, t0):
    meta = dict(
        command="python " + " ".join(sys.argv),
        jax=jax.__version__,
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        models=len(corpus.MODELS),
        bugs=sum(len(m.bugs) for m in corpus.MODELS),
        ops=len(corpus.OPS),
        seconds=round(time.time() - t0, 1),
    )
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(dict(meta=meta, results=results), indent=1))


if __name__ == "__main__":
    main()
