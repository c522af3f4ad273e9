"""False alarms on correct gradients over every family of the corpus, and bug detection beside them (issue 18).

A false alarm is a check that says `failed` on a correct, hand-written gradient. For every
model family of `corpus.MODELS` and `corpus.ALARMS` (tests/corpus: ReLU, leaky ReLU, max-pool,
dropout, residual and norm layers included), at `--seeds` random inits
`m.init(jax.random.key(seed), dtype)`, float32 and float64:

- `check_grad` with default settings, on concrete inputs (what a user gets: resolution and
  the float64 re-check included) and under `jax.jit` (one `jax.vmap` over the seeds per
  family: the inits come from a vmapped `m.init`, which may differ from the eager one in the
  last bits);
- a smaller pass (`--side-seeds`) with `check_directions` (num=8) and a sampled check
  (`check_grad(coords=16)`), keys `jax.random.key(1000 + seed)`: on concrete inputs
  (`--side-transforms concrete,jit` adds the traced pass: one more compile per family and check).

Each check is counted as failed (a false alarm), inconclusive, passed, or error (it raised),
per family, dtype, transform and kind of check. Beside it, the bug-detection table of
docs/verdicts.md re-measured with the same code (`benchmarks/verdicts.py --host`): every
planted bug of the same families at `--bug-seeds` points, on concrete inputs, split by its
size there (gross/moderate/subtle), detected (failed) and localised (its wrong leaf failed).
float64-only families are skipped in float32.

Run:  python benchmarks/false_alarms.py [--seeds 20] [--side-seeds 5] [--bug-seeds 2]
          [--families 'relu*,maxpool*'] [--dtypes float64,float32] [--transforms concrete,jit]
          [--side-transforms concrete] [--checks check_grad,check_directions,sampled] [--quick] [--no-bugs]
          [--out benchmarks/results/false_alarms.json]
--quick: 3 seeds, 2 side seeds, 1 bug seed. Writes JSON (--out) and the Markdown tables
next to it (.md), and prints them.
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
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import verdicts  # noqa: E402  (the corpus selection and the --host checks and tables)

import jgc  # noqa: E402

KINDS = ("models", "alarms")  # verdicts.CORPORA keys: corpus.MODELS and corpus.ALARMS
CHECKS = ("check_grad", "check_directions", "sampled")
TRANSFORMS = ("concrete", "jit")
OUTCOMES = ("failed", "inconclusive", "passed", "error")
COORDS, NUM = 16, 8


def side_key(seed):
    return jax.random.key(1000 + seed)


def concrete_check(kind):
    """`check(loss_fn, grad_fn, params, args, seed)` for verdicts.check_one."""
    if kind == "check_grad":
        return None  # check_one's default: jgc.check_grad(..., method="central")
    if kind == "check_directions":
        return lambda f, g, p, a, s: jgc.check_directions(f, g, p, *a, key=side_key(s), num=NUM)
    return lambda f, g, p, a, s: jgc.check_grad(f, g, p, *a, coords=COORDS, key=side_key(s))


def traced_check(kind, m):
    """A function of (params, args, key) checking m's correct gradient, for jit(vmap(...))."""
    if kind == "check_grad":
        return lambda p, a, k: jgc.check_grad(m.loss_fn, m.grad_fn, p, *a)
    if kind == "check_directions":
        return lambda p, a, k: jgc.check_directions(m.loss_fn, m.grad_fn, p, *a, key=k, num=NUM)
    return lambda p, a, k: jgc.check_grad(m.loss_fn, m.grad_fn, p, *a, coords=COORDS, key=k)


def run_concrete(kind, dtype, seeds, patterns, log):
    """Rows (one per family and seed) of checks of the correct gradient on concrete inputs."""
    rows = []
    for corpus_kind in KINDS:
        r = verdicts.host_run(
            corpus_kind, dtype, "central", range(seeds), patterns, log, variants="correct", check=concrete_check(kind)
        )
        rows += r["rows"]
    return rows


def run_traced(kind, dtype, seeds, patterns, log):
    """Rows of checks of the correct gradient under jit(vmap over the seeds), one compile per family."""
    rows = []
    for corpus_kind in KINDS:
        models, _ = verdicts.select(corpus_kind, patterns, dtype)
        for m in models:
            t = time.time()
            keys = jnp.stack([jax.random.key(s) for s in range(seeds)])
            side = jnp.stack([side_key(s) for s in range(seeds)])
            try:
                params, args = jax.vmap(lambda k, m=m: m.init(k, jnp.dtype(dtype)))(keys)
                res = jax.jit(jax.vmap(traced_check(kind, m)))(params, args, side)
                failed, passed = np.asarray(res.failed), np.asarray(res.passed)
                det = np.asarray(res.deterministic).reshape(seeds, -1).all(axis=1)
                status = np.where(failed, "failed", np.where(passed, "passed", "inconclusive"))
                line = None
            except Exception as e:  # reported, not fatal
                status, det, line = np.full(seeds, "error"), np.ones(seeds, bool), f"{type(e).__name__}: {str(e)[:200]}"
            dt = round(time.time() - t, 2)
            for s in range(seeds):
                rows.append(dict(model=m.name, seed=s, status=str(status[s]), deterministic=bool(det[s]), seconds=dt / seeds))
                if line:
                    rows[-1]["line"] = line
            bad = [s for s in range(seeds) if status[s] == "failed"]
            if bad or line:
                log(f"    jit {kind} {dtype} {m.name}: FALSE ALARM at seeds {bad}" + (f" ({line})" if line else ""))
    return rows


def count(rows):
    c = dict.fromkeys(OUTCOMES, 0)
    for r in rows:
        c[r["status"]] += 1
    c["checks"] = len(rows) - c["error"]
    c["nondeterministic"] = sum(r["status"] == "failed" and not r.get("deterministic", True) for r in rows)
    return c


def families(rows):
    by = collections.defaultdict(list)
    for r in rows:
        by[r["model"]].append(r)
    return {name: count(rs) for name, rs in by.items()}


def cell(c, what="failed"):
    return f"{c[what]}/{c['checks']}" if c["checks"] or c["error"] else "–"


def totals_table(results):
    head = [
        "check",
        "transform",
        "dtype",
        "seeds",
        "checks",
        "false alarms",
        "of which nondeterministic",
        "inconclusive",
        "passed",
        "errors",
        "seconds",
    ]
    rows = []
    for r in results:
        c = r["total"]
        rows.append(
            [
                r["check"],
                r["transform"],
                r["dtype"],
                r["seeds"],
                c["checks"],
                _common.pct(c["failed"], c["checks"]),
                c["nondeterministic"],
            ]
            + [
                _common.pct(c["inconclusive"], c["checks"]),
                _common.pct(c["passed"], c["checks"]),
                c["error"],
                f"{r['seconds']:.0f}",
            ]
        )
    return _common.markdown_table(head, rows)


def family_table(results, names, check="check_grad"):
    """One row per family: false alarms (failed/checks) and inconclusive per dtype and transform, for `check`."""
    cols = [r for r in results if r["check"] == check]
    head = (
        ["family", "corpus"]
        + [f"{r['dtype']} {r['transform']} failed" for r in cols]
        + [f"{r['dtype']} {r['transform']} inconclusive" for r in cols]
    )
    rows = []
    for name, kind in names:
        fam = [r["families"].get(name) for r in cols]
        rows.append([name, kind] + [cell(f) if f else "–" for f in fam] + [cell(f, "inconclusive") if f else "–" for f in fam])
    total = [r["total"] for r in cols]
    rows.append(["**total**", ""] + [cell(t) for t in total] + [cell(t, "inconclusive") for t in total])
    return _common.markdown_table(head, rows)


def side_table(results, names):
    """check_directions and sampled: failed (inconclusive) per family, every dtype and transform in one cell each."""
    cols = [r for r in results if r["check"] != "check_grad"]
    head = ["family"] + [f"{r['check']} {r['dtype']} {r['transform']}" for r in cols]
    rows = []
    for name, _ in names:
        fam = [r["families"].get(name) for r in cols]
        if any(f and (f["failed"] or f["error"]) for f in fam):
            rows.append(
                [name]
                + [
                    f"{f['failed']} ({f['inconclusive']})" + (f" {f['error']} err" if f["error"] else "") if f else "–"
                    for f in fam
                ]
            )
    rows.append(
        ["**total failed (inconclusive) / checks**"]
        + [f"{r['total']['failed']} ({r['total']['inconclusive']}) / {r['total']['checks']}" for r in cols]
    )
    return _common.markdown_table(head, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="random inits per family for check_grad")
    ap.add_argument("--side-seeds", type=int, default=5, help="inits per family for check_directions and the sampled check")
    ap.add_argument("--bug-seeds", type=int, default=2, help="points per family for the bug-detection table")
    ap.add_argument("--families", default="", help="comma-separated name patterns (fnmatch); default: every family")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--transforms", default=",".join(TRANSFORMS), help="for check_grad: concrete, jit")
    ap.add_argument(
        "--side-transforms", default="concrete", help="for check_directions and sampled (jit: one compile per family more)"
    )
    ap.add_argument("--checks", default=",".join(CHECKS))
    ap.add_argument("--quick", action="store_true", help="3 seeds, 2 side seeds, 1 bug seed")
    ap.add_argument("--no-bugs", action="store_true", help="skip the bug-detection table")
    ap.add_argument("--out", default=str(_common.RESULTS / "false_alarms.json"))
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.side_seeds, a.bug_seeds = min(a.seeds, 3), min(a.side_seeds, 2), min(a.bug_seeds, 1)
    patterns = [p for p in a.families.split(",") if p]
    log = lambda s: print(s, flush=True)  # noqa: E731
    names = [
        (m.name, kind)
        for kind in KINDS
        for m in verdicts.CORPORA[kind][0]
        if not patterns or any(fnmatch.fnmatch(m.name, p) for p in patterns)
    ]
    t0 = time.time()
    out = dict(
        meta=dict(
            command=_common.command(),
            machine=_common.machine(device=True),
            seeds=a.seeds,
            side_seeds=a.side_seeds,
            bug_seeds=a.bug_seeds,
            families=len(names),
        ),
        results=[],
        bugs=[],
    )

    def save():
        out["meta"]["seconds"] = round(time.time() - t0, 1)
        _common.write_json(a.out, out)

    for check in a.checks.split(","):
        seeds = a.seeds if check == "check_grad" else a.side_seeds
        for transform in (a.transforms if check == "check_grad" else a.side_transforms).split(","):
            for dt in a.dtypes.split(","):
                t = time.time()
                log(f"{check} {transform} {dt}, {seeds} seeds:")
                with jax.enable_x64(dt == "float64"):
                    rows = (run_concrete if transform == "concrete" else run_traced)(check, dt, seeds, patterns, log)
                r = dict(check=check, transform=transform, dtype=dt, seeds=seeds, seconds=round(time.time() - t, 1))
                r.update(total=count(rows), families=families(rows), rows=rows)
                if transform == "concrete":  # what confirmation / resolution cost, as in verdicts.py --host
                    base = sum(x.get("num_evals", 0) - x.get("resolve_evals", 0) for x in rows)
                    res = sum(x.get("resolve_evals", 0) for x in rows)
                    r["cost"] = dict(resolve_evals=res, base_evals=base, ratio=res / base if base else 0.0)
                out["results"].append(r)
                c = r["total"]
                log(
                    f"  -> false alarms {c['failed']}/{c['checks']} ({c['nondeterministic']} nondeterministic), inconclusive {c['inconclusive']}, errors {c['error']} ({r['seconds']} s)"
                )
                save()
    if not a.no_bugs:
        for kind in KINDS:
            for dt in a.dtypes.split(","):
                t = time.time()
                log(f"bugs {kind} {dt}, {a.bug_seeds} seeds:")
                with jax.enable_x64(dt == "float64"):
                    r = verdicts.host_run(kind, dt, "central", a.bug_seeds, patterns, log, variants="bugs")
                r["seconds"] = round(time.time() - t, 1)
                out["bugs"].append(r)
                log(verdicts.summary(r))
                save()
    md = [
        f"False alarms of jgc on correct gradients (benchmarks/false_alarms.py), written by `{_common.command()}`; "
        f"{len(names)} families, {out['meta']['machine']['device']}, jax {out['meta']['machine']['jax']}, {time.time() - t0:.0f} s.",
        "",
        "## Totals (a false alarm: `failed` on a correct gradient)",
        "",
        totals_table(out["results"]),
    ]
    if any(r["check"] == "check_grad" for r in out["results"]):
        md += ["", "## check_grad per family: failed / checks, inconclusive / checks", "", family_table(out["results"], names)]
    if any(r["check"] != "check_grad" for r in out["results"]):
        md += [
            "",
            "## check_directions and sampled (coords=16): families with a false alarm, failed (inconclusive)",
            "",
            side_table(out["results"], names),
        ]
    conc = [r for r in out["results"] if "cost" in r]
    if conc:
        md += [
            "",
            "Resolution / confirmation cost on correct gradients (concrete): Σ resolve_evals / Σ plain evals: "
            + ", ".join(f"{r['check']} {r['dtype']} {r['cost']['ratio']:.3f}" for r in conc),
        ]
    if out["bugs"]:
        md += [
            "",
            f"## Bug detection on concrete inputs (verdicts.py --host), {a.bug_seeds} points per family",
            "",
            verdicts.host_table(out["bugs"]),
            "",
            verdicts.cost_table(out["bugs"]),
        ]
    text = "\n".join(md) + "\n"
    save()
    pathlib.Path(a.out).with_suffix(".md").write_text(text)
    print()
    print(text)
    print(f"saved {a.out} and {pathlib.Path(a.out).with_suffix('.md')} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
