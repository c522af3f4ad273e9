"""How big every planted bug of the corpus is: its relative error on its wrong leaf.

For every bug of `corpus.MODELS` (and, with --ops, of `corpus.OPS`), measures
‖bad − true‖ / (‖bad‖ + ‖true‖) on the bug's wrong leaf, with `true` = jax.grad of the
loss in float64, at seeds 0 … S−1 (`corpus.bug_size`), and prints a Markdown table with
the bug's tag (its size category at seed 0: gross ≥ 1e-2, moderate 1e-3 … 1e-2,
subtle < 1e-3). Saves JSON.

Run:  python benchmarks/bug_sizes.py [--seeds 3] [--ops] [--out benchmarks/results/bug_sizes.json]
(the Markdown table of the models is also saved next to the JSON, as .md)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from corpus import ADDED, MODELS, OPS, bug_size, size_category  # noqa: E402


def measure(models, seeds):
    rows = []
    for m in models:
        for bug, (_, leaf) in m.bugs.items():
            sizes = [bug_size(m, bug, s) for s in range(seeds)]
            rows.append(
                dict(model=m.name, bug=bug, leaf=leaf, tag=m.tags.get(bug), sizes=sizes, measured=size_category(sizes[0]))
            )
    return rows


def table(rows):
    lines = ["| model | bug | leaf | tag | rel. error (seeds 0, 1, …) |", "|---|---|---|---|---|"]
    for r in rows:
        flag = "" if r["tag"] == r["measured"] else f" (measured {r['measured']})"
        lines.append(
            f"| {r['model']} | {r['bug']} | `{r['leaf']}` | {r['tag']}{flag} | {', '.join(f'{s:.1e}' for s in r['sizes'])} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ops", action="store_true", help="also measure the ops corpus (one row per op and bug)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bug_sizes.json"))
    a = ap.parse_args()
    rows = measure(MODELS, a.seeds)
    print(table(rows))
    added = {m.name for m in ADDED}
    for label, sel in (("all models", rows), ("added models", [r for r in rows if r["model"] in added])):
        print(f"\n{label}: {len(sel)} bugs, by tag: {dict(Counter(r['tag'] for r in sel))}")
    out = dict(models=rows)
    if a.ops:
        ops = measure(OPS, a.seeds)
        out["ops"] = ops
        print(f"ops: {len(OPS)} ops, {len(ops)} bugs, by tag: {dict(Counter(r['tag'] for r in ops))}")
        print(
            f"ops whose tag disagrees with the measurement at seed 0: {[(r['model'], r['bug']) for r in ops if r['tag'] != r['measured']]}"
        )
    pathlib.Path(a.out).write_text(json.dumps(out, indent=1))
    md = pathlib.Path(a.out).with_suffix(".md")
    md.write_text(f"Bug sizes of tests/corpus, written by `python {' '.join(sys.argv)}`.\n\n{table(rows)}\n")
    print(f"saved {a.out} and {md}")


if __name__ == "__main__":
    main()
