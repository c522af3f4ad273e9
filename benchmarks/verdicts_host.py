"""Verdicts by default: `jgc.check_grad` called plainly on concrete inputs, over the bug corpus (tests/corpus).

benchmarks/verdicts.py measures verdicts under jit/vmap, where nothing is resolved. This
measures what a user gets by default: `jgc.check_grad(m.loss_fn, grad_fn, params, *args)`
on concrete inputs, where unresolved leaves get adapted steps and, for a float32 check, a
float64 re-check (float32 then guarantees tol 1e-4). For every model of the corpus, every
variant (the correct gradient and each planted bug) is checked at `--seeds` points
`m.init(jax.random.key(seed), dtype)`, seed = 0, 1, …

A correct check that fails is a false alarm. A bug check that fails is a detection; it is
localised when its wrong leaf is among the failing leaves (`leaf_failed`); a bug check that
passes is a miss. Bug checks are split by the bug's size at that very point: its relative
error on its wrong leaf, ‖bad − true‖ / (‖bad‖ + ‖true‖), with the params and args cast to
float64 and true = jax.grad in float64 (gross ≥ 1e-2, moderate 1e-3 … 1e-2, subtle < 1e-3;
`corpus.size_category`). The cost of resolution is Σ resolve_evals / Σ (num_evals −
resolve_evals): the evaluations spent on unresolved leaves against those of the plain check.

Run:  python benchmarks/verdicts_host.py [--corpus models,ops] [--seeds 2] [--models 'layernorm*,conv*']
          [--dtypes float64,float32] [--methods central] [--out benchmarks/results/verdicts_host.json]
Prints every false alarm, miss and inconclusive check (with the report's first line), then
Markdown tables (docs/verdicts.md holds the last ones), and saves JSON.
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

import corpus  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from verdicts import select  # noqa: E402  (the corpus selection the traced benchmark uses)

import jgc  # noqa: E402

KINDS = ("correct",) + corpus.CATEGORIES


def to64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def leaf_of(tree, path):
    return next(x for k, x in jax.tree_util.tree_flatten_with_path(tree)[0] if jax.tree_util.keystr(k) == path)


def sizes_at(m, params, args):
    """Each bug's relative error on its wrong leaf at (params, args), cast to float64 (as corpus.bug_size)."""
    out = {}
    with jax.enable_x64(True):
        p, a = to64((params, args))
        true = jax.grad(m.loss_fn)(p, *a)
        for bug, (bad_fn, leaf) in m.bugs.items():
            bad = bad_fn(p, *a)
            t, b = (jnp.ravel(jnp.asarray(leaf_of(x, leaf), jnp.float64)) for x in (true, bad))
            den = float(jnp.linalg.norm(t) + jnp.linalg.norm(b))
            out[bug] = 0.0 if den == 0 else float(jnp.linalg.norm(b - t)) / den
    return out


def first_line(r):
    return r.report().splitlines()[0]


def check_one(m, bug, fn, leaf, seed, params, args, size, method):
    """One plain check; its row (and the report's first line where the verdict is not the expected one)."""
    t = time.time()
    kind = "correct" if leaf is None else corpus.size_category(size)
    try:
        r = jgc.check_grad(m.loss_fn, fn, params, *args, method=method)
    except Exception as e:  # reported, not fatal: the run keeps what it measured
        line = f"{type(e).__name__}: {str(e)[:200]}"
        return dict(model=m.name, bug=bug, seed=seed, kind=kind, size=size, status="error", line=line, seconds=0.0)
    row = dict(
        model=m.name,
        bug=bug,
        seed=seed,
        kind=kind,
        size=size,
        status=r.status,
        localised=False,
        tol=float(r.tol),
        num_evals=int(r.num_evals),
        resolve_evals=int(r.resolve_evals),
        float64=any("float64 re-check" in n for n in r.notes),
        # a float64 check whose loss's measured rounding level is that of float32: float32 eps and tol
        like_float32=any("rounds like float32" in n for n in r.notes),
        seconds=round(time.time() - t, 3),
    )
    if leaf is not None and r.status == "failed":
        row["localised"] = bool(jax.tree.leaves(r.leaf_failed)[r.layout.paths.index(leaf)])
    expected = "passed" if leaf is None else "failed"
    if r.status != expected or (leaf is not None and not row["localised"]):
        row["line"] = first_line(r)
    return row


def run(kind, dtype_name, method, seeds, patterns, log):
    dtype = jnp.dtype(dtype_name)
    models, skipped = select(kind, patterns, dtype_name, method)
    rows = []
    for m in models:
        for seed in range(seeds):
            params, args = m.init(jax.random.key(seed), dtype)
            sizes = sizes_at(m, params, args)
            variants = [("correct", m.grad_fn, None)] + [(b, fn, leaf) for b, (fn, leaf) in m.bugs.items()]
            for bug, fn, leaf in variants:
                row = check_one(m, bug, fn, leaf, seed, params, args, sizes.get(bug), method)
                rows.append(row)
                if "line" in row:
                    log(f"    {describe(row)}")
    return dict(corpus=kind, dtype=dtype_name, method=method, seeds=seeds, skipped=skipped, rows=rows, **tally(rows))


def describe(row):
    if row["status"] == "error":
        what = "ERROR"
    elif row["bug"] == "correct":
        what = {"failed": "FALSE ALARM", "inconclusive": "inconclusive"}.get(row["status"], row["status"])
    else:
        what = {"passed": "MISSED", "inconclusive": "inconclusive", "failed": "not localised"}[row["status"]]
        within = " ≤ tol" if row["status"] == "passed" and row["size"] <= row["tol"] else ""
        what += f" ({row['kind']}, size {row['size']:.1e}{within})"
    return f"{what}: {row['model']}/{row['bug']} seed {row['seed']}: {row['line']}"


def tally(rows):
    """Counts per kind of variant (correct, gross, moderate, subtle) and the cost of resolution."""
    counts = {k: dict(checks=0, passed=0, within_tol=0, failed=0, localised=0, inconclusive=0, error=0) for k in KINDS}
    for r in rows:
        c = counts[r["kind"]]
        if r["status"] == "error":  # counted apart, not among the checks
            c["error"] += 1
            continue
        c["checks"] += 1
        c[r["status"]] += 1
        c["localised"] += r["localised"]
        # a miss of a bug smaller than the tolerance the pass guarantees is no broken promise
        c["within_tol"] += r["status"] == "passed" and r["kind"] != "correct" and r["size"] <= r["tol"]
    ok = [r for r in rows if r["status"] != "error"]

    def cost(rs):
        res = sum(r["resolve_evals"] for r in rs)
        base = sum(r["num_evals"] - r["resolve_evals"] for r in rs)
        return dict(
            checks=len(rs),
            resolve_evals=res,
            base_evals=base,
            ratio=res / base if base else 0.0,
            resolved=sum(r["resolve_evals"] > 0 for r in rs),
            float64=sum(r["float64"] for r in rs),
            like_float32=sum(r["like_float32"] for r in rs),
            seconds=round(sum(r["seconds"] for r in rs), 1),
        )

    tols = sorted({r["tol"] for r in ok})
    return dict(counts=counts, cost=dict(all=cost(ok), correct=cost([r for r in ok if r["bug"] == "correct"])), tols=tols)


def pct(a, b):
    return f"{100 * a / b:.0f}% ({a}/{b})" if b else "–"


def table(results):
    """One row per (corpus, dtype, method, kind of variant); for correct rows `failed` is a false
    alarm, for bug rows `passed` is a miss (`≤ tol`: of those, the bug's size was within the
    tolerance the pass guarantees)."""
    head = ["corpus", "dtype", "method", "variants", "checks", "passed", "failed", "wrong leaf failed", "inconclusive"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for k in KINDS:
            c = r["counts"][k]
            n = c["checks"]
            if not n:
                continue
            passed = pct(c["passed"], n) + (f", {c['within_tol']} ≤ tol" if c["within_tol"] else "")
            cells = [r["corpus"], r["dtype"], r["method"], k, str(n), passed, pct(c["failed"], n)]
            cells += ["–" if k == "correct" else pct(c["localised"], n), pct(c["inconclusive"], n)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(results):
    head = ["corpus", "dtype", "method", "tol", "checks", "resolution / plain evals", "same, correct only"]
    head += ["checks with resolution", "float64 re-checks", "loss rounds like float32", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        a, c = r["cost"]["all"], r["cost"]["correct"]
        cells = [r["corpus"], r["dtype"], r["method"], ", ".join(f"{t:.0e}" for t in r["tols"]), str(a["checks"])]
        cells += [f"{a['ratio']:.3f} ({a['resolve_evals']:,}/{a['base_evals']:,})"]
        cells += [f"{c['ratio']:.3f} ({c['resolve_evals']:,}/{c['base_evals']:,})"]
        cells += [pct(a["resolved"], a["checks"]), pct(a["float64"], a["checks"]), pct(a["like_float32"], a["checks"])]
        cells += [f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(out, results, t0):
    meta = dict(
        command="python " + " ".join(sys.argv),
        jax=jax.__version__,
        numpy=np.__version__,
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        models=len(corpus.MODELS),
        bugs=sum(len(m.bugs) for m in corpus.MODELS),
        ops=len(corpus.OPS),
        seconds=round(time.time() - t0, 1),
    )
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(dict(meta=meta, results=results), indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--corpus", default="models,ops", help="models, ops or both")
    ap.add_argument("--models", default="", help="comma-separated name patterns (fnmatch) of models or ops to run")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--methods", default="central")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verdicts_host.json"))
    a = ap.parse_args()
    patterns = [p for p in a.models.split(",") if p]
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()
    results = []
    for kind in a.corpus.split(","):
        for dt in a.dtypes.split(","):
            for method in a.methods.split(","):
                t = time.time()
                log(f"{kind} {dt} {method}:")
                with jax.enable_x64(dt == "float64"):
                    r = run(kind, dt, method, a.seeds, patterns, log)
                r["seconds"] = round(time.time() - t, 1)
                results.append(r)
                c = r["counts"]
                log(
                    f"{kind} {dt} {method}: false alarms {c['correct']['failed']}/{c['correct']['checks']}, "
                    f"correct inconclusive {c['correct']['inconclusive']}, "
                    + ", ".join(
                        f"{k} detected {c[k]['failed']}/{c[k]['checks']} missed {c[k]['passed']}" for k in corpus.CATEGORIES
                    )
                    + f", resolution {r['cost']['all']['ratio']:.3f}× ({r['seconds']} s)"
                )
                for s in r["skipped"]:
                    log(f"    skipped {s}")
                save(a.out, results, t0)  # after every configuration, so a long run keeps what it measured
    print()
    for kind in a.corpus.split(","):
        models, _ = select(kind, patterns)
        print(f"{kind}: {len(models)} models, {sum(len(m.bugs) for m in models)} planted bugs, {a.seeds} seeds each")
    print()
    print(table(results))
    errors = sum(c["error"] for r in results for c in r["counts"].values())
    if errors:
        print(f"({errors} checks raised: listed above as ERROR, not counted in the table)")
    print()
    print(cost_table(results))
    save(a.out, results, t0)
    print(f"saved {a.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
