"""Verdict quality of jgc's defaults on the bug corpus (tests/corpus): traced (jit/vmap) or on concrete inputs.

Two modes, one corpus selection (`select`) and one size measure (each bug's relative error on
its wrong leaf at the checked point, ‖bad − true‖ / (‖bad‖ + ‖true‖) with true = jax.grad in
float64: gross ≥ 1e-2, moderate 1e-3 … 1e-2, subtle < 1e-3; `corpus.size_category`):

--traced (the default): checks under `jit`/`vmap`, where nothing is resolved. For float64
and float32 and every method, every correct model is checked over SEEDS random points (a
failure is a false alarm; an inconclusive check is counted apart, not as a false alarm) and
every planted bug over the same points (a check that does not pass is a detection; the bug
is localised when its wrong leaf fails too). Every variant (correct and bugs) and seed of a
model is one vmapped check, so each model compiles once per configuration; ops with the same
params shapes share one check (`corpus.group_variants`, under `jax.lax.map`). With --sweep,
the same is done for a grid of eps and tol around each default, which is how the defaults in
jgc/_stencils.py were chosen. Only the public API is used: `jgc.check_grad` and the result's
`passed`, `leaf_passed`, `layout.paths` (and `inconclusive`).

--host: what a user gets by default, `jgc.check_grad(m.loss_fn, grad_fn, params, *args)` on
concrete inputs, where unresolved leaves get adapted steps and, for a float32 check, a
float64 re-check (float32 then guarantees tol 1e-4). Every variant is checked at `--seeds`
points `m.init(jax.random.key(seed), dtype)`, seed = 0, 1, … A correct check that fails is
a false alarm; a bug check that fails is a detection, localised when its wrong leaf is among
the failing leaves (`leaf_failed`); a bug check that passes is a miss. The cost of
resolution is Σ resolve_evals / Σ (num_evals − resolve_evals): the evaluations spent on
unresolved leaves and on confirming failures against those of the plain check; the
confirmation alone (`run.confirm_evals`) is its own column.

Run:  python benchmarks/verdicts.py [--traced] [--seeds 5] [--quick] [--corpus models,ops] [--models 'layernorm*,conv*']
          [--dtypes float64,float32] [--methods central,...] [--sweep] [--out benchmarks/results/verdicts.json]
      python benchmarks/verdicts.py --host [--corpus models,ops,alarms] [--seeds 2] [--models ...]
          [--dtypes float64,float32] [--methods central] [--out benchmarks/results/verdicts_host.json]
--corpus alarms is tests/corpus/_alarms.py (issue 18's false-alarm classes). Prints Markdown
tables (docs/verdicts.md holds the last ones; --host also lists every false alarm, miss and
inconclusive check with the report's first line) and saves JSON.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import _common  # noqa: E402
import corpus  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jgc  # noqa: E402
from jgc import _stencils  # noqa: E402

pct = _common.pct
METHODS = ["central", "forward", "five_point", "complex_step"]
CORPORA = {
    "models": (corpus.MODELS, corpus.NOT_COMPLEX_SAFE),
    "ops": (corpus.OPS, corpus.OPS_NOT_COMPLEX_SAFE),
    "alarms": (corpus.ALARMS, corpus.ALARMS_NOT_COMPLEX_SAFE),
}
COUNTS = ("false_alarms", "inconclusive", "correct") + tuple(
    f"{c}_{k}" for c in corpus.CATEGORIES for k in ("detected", "localised", "inconclusive", "bugs")
)
KINDS = ("correct",) + corpus.CATEGORIES


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


def save(out, results, t0, mode):
    meta = dict(
        command=_common.command(),
        mode=mode,
        jax=jax.__version__,
        numpy=np.__version__,
        platform=_common.machine()["platform"],
        device=str(jax.devices()[0]),
        models=len(corpus.MODELS),
        bugs=sum(len(m.bugs) for m in corpus.MODELS),
        ops=len(corpus.OPS),
        alarms=len(corpus.ALARMS),
        seconds=round(time.time() - t0, 1),
    )
    _common.write_json(out, dict(meta=meta, results=results))


# ---------------------------------------------------------------- --traced: one vmapped check per model


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


def traced_tally(rows_by_model):
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


def traced_run(kind, dtype_name, method, seeds, sweep, patterns):
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
        default=traced_tally(per_grid[0]),
        rows=per_grid[0],
        skipped=skipped,
        sweep=[dict(eps=e, tol=t, **traced_tally(r)) for (e, t), r in zip(grid, per_grid, strict=True)] if sweep else [],
    )


def traced_table(results):
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


def traced_misses(r):
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


# ---------------------------------------------------------------- --host: check_grad on concrete inputs, one call per check


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


def check_one(m, bug, fn, leaf, seed, params, args, size, method, check=None):
    """One plain check; its row (and the report's first line where the verdict is not the expected one).
    `check(loss_fn, grad_fn, params, args, seed)` replaces `jgc.check_grad(..., method=method)` (another kind of check)."""
    t = time.time()
    kind = "correct" if leaf is None else corpus.size_category(size)
    try:
        if check is None:
            r = jgc.check_grad(m.loss_fn, fn, params, *args, method=method)
        else:
            r = check(m.loss_fn, fn, params, args, seed)
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
        resolve_evals=int(r.resolve_evals),  # re-measurement of unresolved leaves + confirmation of failures
        confirm_evals=int(r.run.confirm_evals),  # of which: confirming failures
        float64=any("float64 re-check" in n for n in r.notes),
        # a float64 check whose loss's measured rounding level is that of float32: float32 eps and tol
        like_float32=any("rounds like float32" in n for n in r.notes),
        deterministic=bool(np.all(np.asarray(r.deterministic))),
        kinks=int(np.sum(np.asarray(r.noise.kink))),
        seconds=round(time.time() - t, 3),
    )
    if leaf is not None and r.status == "failed":
        row["localised"] = bool(jax.tree.leaves(r.leaf_failed)[r.layout.paths.index(leaf)])
    expected = "passed" if leaf is None else "failed"
    if r.status != expected or (leaf is not None and not row["localised"]):
        row["line"] = first_line(r)
    return row


def host_run(kind, dtype_name, method, seeds, patterns, log, variants="all", check=None):
    """Every model of `kind` matching `patterns` at `seeds` (a count, or the seeds themselves): its correct
    gradient and planted bugs ("all"), or only one of the two ("correct", "bugs"), each by `check_one`."""
    dtype = jnp.dtype(dtype_name)
    models, skipped = select(kind, patterns, dtype_name, method)
    rows = []
    for m in models:
        for seed in range(seeds) if isinstance(seeds, int) else seeds:
            params, args = m.init(jax.random.key(seed), dtype)
            sizes = sizes_at(m, params, args) if variants != "correct" else {}
            todo = [("correct", m.grad_fn, None)] if variants != "bugs" else []
            todo += [(b, fn, leaf) for b, (fn, leaf) in m.bugs.items()] if variants != "correct" else []
            for bug, fn, leaf in todo:
                row = check_one(m, bug, fn, leaf, seed, params, args, sizes.get(bug), method, check)
                rows.append(row)
                if "line" in row:
                    log(f"    {describe(row)}")
    return dict(
        corpus=kind,
        dtype=dtype_name,
        method=method,
        seeds=seeds if isinstance(seeds, int) else len(list(seeds)),
        skipped=skipped,
        rows=rows,
        **host_tally(rows),
    )


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


def host_tally(rows):
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
        confirm = sum(r.get("confirm_evals", 0) for r in rs)
        return dict(
            checks=len(rs),
            resolve_evals=res,
            confirm_evals=confirm,
            base_evals=base,
            ratio=res / base if base else 0.0,
            confirm_ratio=confirm / base if base else 0.0,
            resolved=sum(r["resolve_evals"] > 0 for r in rs),
            float64=sum(r["float64"] for r in rs),
            like_float32=sum(r["like_float32"] for r in rs),
            seconds=round(sum(r["seconds"] for r in rs), 1),
        )

    tols = sorted({r["tol"] for r in ok})
    return dict(counts=counts, cost=dict(all=cost(ok), correct=cost([r for r in ok if r["bug"] == "correct"])), tols=tols)


def host_table(results):
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
    head = [
        "corpus",
        "dtype",
        "method",
        "tol",
        "checks",
        "resolution / plain evals",
        "of which confirmation",
        "same, correct only",
    ]
    head += ["checks with resolution", "float64 re-checks", "loss rounds like float32", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        a, c = r["cost"]["all"], r["cost"]["correct"]
        cells = [r["corpus"], r["dtype"], r["method"], ", ".join(f"{t:.0e}" for t in r["tols"]), str(a["checks"])]
        cells += [f"{a['ratio']:.3f} ({a['resolve_evals']:,}/{a['base_evals']:,})"]
        cells += [f"{a.get('confirm_ratio', 0.0):.3f} ({a.get('confirm_evals', 0):,}/{a['base_evals']:,})"]
        cells += [f"{c['ratio']:.3f} ({c['resolve_evals']:,}/{c['base_evals']:,})"]
        cells += [pct(a["resolved"], a["checks"]), pct(a["float64"], a["checks"]), pct(a["like_float32"], a["checks"])]
        cells += [f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main_traced(a, patterns):
    if a.quick:
        a.methods, a.seeds = "central", min(a.seeds, 2)
    t0 = time.time()
    results = []
    for kind in a.corpus.split(","):
        for dt in a.dtypes.split(","):
            for method in a.methods.split(","):
                t = time.time()
                with jax.enable_x64(dt == "float64"):
                    r = traced_run(kind, dt, method, a.seeds, a.sweep, patterns)
                r["seconds"] = round(time.time() - t, 1)
                results.append(r)
                d = r["default"]
                print(
                    f"{kind} {dt} {method}: false alarms {d['false_alarms']}/{d['correct']}, inconclusive {d['inconclusive']}, "
                    + ", ".join(f"{c} detected {d[f'{c}_detected']}/{d[f'{c}_bugs']}" for c in corpus.CATEGORIES)
                    + f" ({r['seconds']} s)",
                    flush=True,
                )
                if a.verbose or kind != "ops":
                    print("\n".join(traced_misses(r)))
                for s in r["skipped"] if a.verbose else []:
                    print(f"    skipped {s}")
                save(a.out, results, t0, "traced")  # after every configuration, so a long run keeps what it measured
    print()
    for kind in a.corpus.split(","):
        models, _ = select(kind, patterns)
        print(f"{kind}: {len(models)} models, {sum(len(m.bugs) for m in models)} planted bugs, {a.seeds} seeds each")
    print(traced_table(results))
    if a.sweep:
        print()
        print(sweep_table(results))
    save(a.out, results, t0, "traced")
    print(f"saved {a.out} ({time.time() - t0:.0f} s)")


def main_host(a, patterns):
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()
    results = []
    for kind in a.corpus.split(","):
        for dt in a.dtypes.split(","):
            for method in a.methods.split(","):
                t = time.time()
                log(f"{kind} {dt} {method}:")
                with jax.enable_x64(dt == "float64"):
                    r = host_run(kind, dt, method, a.seeds, patterns, log)
                r["seconds"] = round(time.time() - t, 1)
                results.append(r)
                log(summary(r))
                for s in r["skipped"]:
                    log(f"    skipped {s}")
                save(a.out, results, t0, "host")  # after every configuration, so a long run keeps what it measured
    print()
    for kind in a.corpus.split(","):
        models, _ = select(kind, patterns)
        print(f"{kind}: {len(models)} models, {sum(len(m.bugs) for m in models)} planted bugs, {a.seeds} seeds each")
    print()
    print(host_table(results))
    errors = sum(c["error"] for r in results for c in r["counts"].values())
    if errors:
        print(f"({errors} checks raised: listed above as ERROR, not counted in the table)")
    print()
    print(cost_table(results))
    save(a.out, results, t0, "host")
    print(f"saved {a.out} ({time.time() - t0:.0f} s)")


def summary(r):
    """One line: false alarms, inconclusive, detections per size and the cost of resolution of a --host run."""
    c = r["counts"]
    return (
        f"{r['corpus']} {r['dtype']} {r['method']}: false alarms {c['correct']['failed']}/{c['correct']['checks']}, "
        f"correct inconclusive {c['correct']['inconclusive']}, "
        + ", ".join(f"{k} detected {c[k]['failed']}/{c[k]['checks']} missed {c[k]['passed']}" for k in corpus.CATEGORIES)
        + f", resolution {r['cost']['all']['ratio']:.3f}× ({r.get('seconds', 0)} s)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--traced", action="store_true", help="checks under jit/vmap (the default)")
    mode.add_argument("--host", action="store_true", help="check_grad on concrete inputs, as a user calls it")
    ap.add_argument("--seeds", type=int, default=None, help="points per model (default 5 traced, 2 host)")
    ap.add_argument("--quick", action="store_true", help="--traced: central only, 2 seeds")
    ap.add_argument("--corpus", default="models,ops", help="models, ops, alarms, comma-separated")
    ap.add_argument("--models", default="", help="comma-separated name patterns (fnmatch) of models or ops to run")
    ap.add_argument("--sweep", action="store_true", help="--traced: also vary eps and tol around each default")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--methods", default=None, help="default: every method traced, central host")
    ap.add_argument("--verbose", action="store_true", help="--traced: list every false alarm and missed bug")
    ap.add_argument("--out", default=None, help="default benchmarks/results/verdicts.json (traced), verdicts_host.json (host)")
    a = ap.parse_args()
    a.seeds = a.seeds if a.seeds is not None else (2 if a.host else 5)
    a.methods = a.methods or ("central" if a.host else ",".join(METHODS))
    a.out = a.out or str(_common.RESULTS / ("verdicts_host.json" if a.host else "verdicts.json"))
    patterns = [p for p in a.models.split(",") if p]
    (main_host if a.host else main_traced)(a, patterns)


if __name__ == "__main__":
    main()
