"""The cost of a *first* check, against the bare cost of the same work, in fresh processes (issue 9).

For each case, in fresh subprocesses (float64, x64 enabled in the subprocess only):

  jgc     the first jgc.check_grad(loss, grad, params, *args) of the process, then warm calls
  floor   the bare cost: the first call of jit(vmap(loss of θ)) over the 2n points θ ± h·e_i
          (one chunk for these small n) plus the first call of jit(jax.grad(loss of θ)),
          then warm calls of both
  (jgc_plain, with --methods: the same check with partial_eval=False)

The JAX backend is initialised before the clock starts (the model's arrays are built
first), so "first" is tracing, lowering, XLA compilation and the run. The ratio jgc ÷ floor
is what a first check costs over the least a check could cost. Each cell runs in
--processes fresh processes; the median of their first calls is reported (and all of them
are saved).

Compilations and traces are counted with jax.monitoring: a duration listener counts the
events /jax/core/compile/backend_compile_duration (one per XLA compilation),
/jax/core/compile/jaxpr_trace_duration (one per traced function) and
/jax/core/compile/jaxpr_to_mlir_module_duration (one per lowering), and sums their
seconds; these names were checked in jax/_src/dispatch.py of JAX 0.10. Every event name
seen is saved too, and the script warns when the floor's first call shows no compilation
event (the names would have changed).

Cases: the classic course network's shape (tanh MLP 4-5-3-1 with column biases, n = 47,
benchmarks/_nets.py) and models of 10, 50 and 200 small leaves (a dict of (3,) vectors, a
smooth least-squares loss coupling neighbouring leaves, hand-written gradient).

Run:
    python benchmarks/first_call.py                 # writes benchmarks/results/first_call.json
    python benchmarks/first_call.py --quick         # one process per cell, 10 and 50 leaves
    python benchmarks/first_call.py --cases leaves200 --processes 5 --methods jgc,jgc_plain,floor
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from collections import defaultdict

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import _nets  # noqa: E402

CASES = ["classic47", "leaves10", "leaves50", "leaves200"]
METHODS = ["jgc", "jgc_plain", "floor"]
EVENTS = {
    "compiles": "/jax/core/compile/backend_compile_duration",
    "traces": "/jax/core/compile/jaxpr_trace_duration",
    "lowerings": "/jax/core/compile/jaxpr_to_mlir_module_duration",
}


# ---------------------------------------------------------------- the models


def leaves_model(k):
    """k leaves of shape (3,); loss = Σ_i ½‖tanh(w_i) + 0.1·w_{i+1} − y_i‖² (cyclic): smooth, every leaf matters."""
    import jax
    import jax.numpy as jnp

    names = [f"w{i:03d}" for i in range(k)]
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * k)
    params = {name: 0.5 * jax.random.normal(keys[i], (3,)) for i, name in enumerate(names)}
    y = {name: 0.5 * jax.random.normal(keys[k + i], (3,)) for i, name in enumerate(names)}

    def residual(p, y, i):
        return jnp.tanh(p[names[i]]) + 0.1 * p[names[(i + 1) % k]] - y[names[i]]

    def loss(p, y):
        return sum(0.5 * jnp.sum(residual(p, y, i) ** 2) for i in range(k))

    def grad(p, y):
        g = {name: jnp.zeros_like(v) for name, v in p.items()}
        for i in range(k):
            r = residual(p, y, i)
            g[names[i]] = g[names[i]] + r * (1 - jnp.tanh(p[names[i]]) ** 2)
            g[names[(i + 1) % k]] = g[names[(i + 1) % k]] + 0.1 * r
        return g

    return loss, grad, params, (y,)


def build(case):
    if case == "classic47":
        m = _nets.build("mlp47")
        return m.loss, m.grad, m.params, m.args
    if case.startswith("leaves"):
        return leaves_model(int(case[len("leaves") :]))
    raise ValueError(f"unknown case {case!r}")


# ---------------------------------------------------------------- one cell (its own process)


class Events:
    """Counts and sums the durations of jax.monitoring events since the last reset."""

    def __init__(self):
        import jax.monitoring

        self.reset()
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **kwargs):
        self.count[event] += 1
        self.seconds[event] += duration
        if event == EVENTS["compiles"]:
            self.compiled.append(kwargs.get("fun_name", "?"))

    def reset(self):
        self.count, self.seconds, self.compiled = defaultdict(int), defaultdict(float), []

    def summary(self):
        out = {name: self.count.get(event, 0) for name, event in EVENTS.items()}
        out.update({f"{name}_s": self.seconds.get(event, 0.0) for name, event in EVENTS.items()})
        out["all_events"] = dict(self.count)
        out["compiled_functions"] = list(self.compiled)
        return out


def cell(case, method, repeat):
    import jax

    jax.config.update("jax_enable_x64", True)  # this subprocess only

    import numpy as np
    from jax.flatten_util import ravel_pytree

    loss, grad, params, args = build(case)
    theta, unravel = ravel_pytree(params)
    n = int(theta.size)
    row = {"case": case, "method": method, "n": n, "leaves": len(jax.tree_util.tree_leaves(params))}
    events = Events()

    if method.startswith("jgc"):
        import jgc

        kwargs = _nets.jgc_kwargs(method)
        calls = [lambda: jgc.check_grad(loss, grad, params, *args, **kwargs)]
    elif method == "floor":
        loss_of_theta = lambda t: loss(unravel(t), *args)
        evals = jax.jit(_nets.floor_numeric_grad(loss_of_theta, n, 1e-6, _nets.floor_chunk(n, 8)))
        grad_jit = jax.jit(jax.grad(loss_of_theta))
        calls = [lambda: evals(theta), lambda: grad_jit(theta)]
    else:
        raise ValueError(f"unknown method {method!r}")

    def run():
        t = time.perf_counter()
        outs = [jax.block_until_ready(c()) for c in calls]
        return outs, time.perf_counter() - t

    outs, row["first_s"] = run()
    row["first"] = events.summary()
    warm = []
    events.reset()
    for _ in range(repeat):
        warm.append(run()[1])
    row["warm_s"] = statistics.median(warm) if warm else None
    row["warm"] = events.summary()  # over all warm calls together: should be no compilation
    if method.startswith("jgc"):
        res = outs[0]
        row.update(passed=bool(res.passed), rel_error=float(res.rel_error), num_evals=int(res.num_evals))
    else:
        g = np.asarray(ravel_pytree(grad(params, *args))[0])
        num = np.asarray(outs[0])
        row.update(num_evals=2 * n, rel_error=float(np.linalg.norm(num - g) / (np.linalg.norm(num) + np.linalg.norm(g))))
    return row


# ---------------------------------------------------------------- the run


def run_cell(case, method, opts):
    cmd = [sys.executable, __file__, "--one", case, method, "--repeat", str(opts.repeat)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "method": method, "error": f"timed out after {opts.timeout:.0f} s"}
    if proc.returncode != 0:
        return {"case": case, "method": method, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs):
    """One row from the runs of a cell in several processes: medians, and every first call."""
    ok = [r for r in runs if "error" not in r and "skipped" not in r]
    if not ok:
        return runs[0]
    row = dict(ok[len(ok) // 2])
    row["first_s"] = statistics.median(r["first_s"] for r in ok)
    warm = [r["warm_s"] for r in ok if r["warm_s"] is not None]
    row["warm_s"] = statistics.median(warm) if warm else None
    row["first_s_all"] = [r["first_s"] for r in ok]
    row["compile_s_median"] = statistics.median(r["first"]["compiles_s"] for r in ok)
    row["processes"] = len(ok)
    row["failed_processes"] = [r["error"] for r in runs if "error" in r]
    return row


def table(rows):
    lines = [
        "| case | n | leaves | method | first call | of which XLA compile | compiles (first) | traces (first) | compiles (warm) | warm | first ÷ floor |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    floors = {r["case"]: r for r in rows if r["method"] == "floor" and "first_s" in r}
    for r in rows:
        if "first_s" not in r:
            lines.append(f"| {r['case']} | | | {r['method']} | {r.get('error') or r.get('skipped')} | | | | | | |")
            continue
        f = floors.get(r["case"])
        ratio = f"{r['first_s'] / f['first_s']:.1f}×" if f else "–"
        warm = f"{r['warm_s'] * 1e3:.2f} ms" if r["warm_s"] is not None else "–"
        lines.append(
            f"| {r['case']} | {r['n']} | {r['leaves']} | {r['method']} | {r['first_s']:.2f} s | {r['compile_s_median']:.2f} s | "
            f"{r['first']['compiles']} | {r['first']['traces']} | {r['warm']['compiles']} | {warm} | {ratio} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help=f"comma-separated, of {CASES} (leavesK for any K)")
    ap.add_argument("--methods", default="jgc,floor", help=f"comma-separated, of {METHODS}")
    ap.add_argument("--processes", type=int, default=3, help="fresh processes per cell (median of first calls)")
    ap.add_argument("--repeat", type=int, default=5, help="warm calls per process")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="one process per cell, 2 warm calls, cases classic47, leaves10, leaves50 unless --cases",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.one:
        print(json.dumps(cell(*opts.one, opts.repeat)))
        return
    if opts.quick:
        opts.processes, opts.repeat = 1, 2
    opts.cases = opts.cases or ("classic47,leaves10,leaves50" if opts.quick else ",".join(CASES))

    result = {
        "machine": _common.machine(),
        "command": " ".join(["python benchmarks/first_call.py", *sys.argv[1:]]),
        "events": EVENTS,
        "rows": [],
    }
    out = (
        pathlib.Path(opts.out)
        if opts.out
        else pathlib.Path(__file__).parent / "results" / ("first_call_quick.json" if opts.quick else "first_call.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in opts.cases.split(","):
        for method in opts.methods.split(","):
            load = os.getloadavg()[0]
            row = summarise([run_cell(case, method, opts) for _ in range(opts.processes)])
            row["load_before"] = load
            result["rows"].append(row)
            out.write_text(json.dumps(result, indent=1))
            if "first_s" in row:
                print(
                    f"{case:<10} {method:<12} n={row['n']:<5} first {row['first_s']:6.2f} s (compile {row['compile_s_median']:.2f} s, "
                    f"{row['first']['compiles']} compiles, {row['first']['traces']} traces)  warm {row['warm_s'] * 1e3:7.2f} ms "
                    f"({row['warm']['compiles']} compiles)",
                    flush=True,
                )
                if method == "floor" and row["first"]["compiles"] == 0:
                    print(
                        f"  warning: no {EVENTS['compiles']} event in the floor's first call; events seen: {row['first']['all_events']}"
                    )
            else:
                print(f"{case:<10} {method:<12} {row.get('error') or row.get('skipped')}", flush=True)
    print()
    print(table(result["rows"]))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
