"""jgc.check_seeds on an accelerator: seeds × model sizes × dtypes, first call and warm, against the bare floor.

Meant for one NVIDIA H200 with JAX's CUDA build (`pip install "jax[cuda12]"`); it runs on
any JAX backend (`--quick`: tiny sizes for a CPU, to check that the script works).

For each tanh MLP of benchmarks/_nets.py (column biases; n = 47, 8,577, 34,645 with 8, 64,
128 examples) and dtype (float32, float64), in a subprocess of its own (x64 enabled there
only, for float64), for 1, 16 and 256 seeds:

  jgc    jgc.check_seeds(loss, grad, init, keys, x, y): init and a full check per seed, vmapped,
         in one compiled call. First call (tracing and compilation included) and warm (median
         of --repeat calls).
  floor  the least the same work can cost: one jitted call that initialises the seeds'
         parameters (as check_seeds does) and evaluates, per seed, the loss at the 2n points
         θ ± h·e_i (vmapped over seeds and over a chunk of points, chunks run by lax.map,
         the perturbed copies of θ kept under --chunk-mb like jgc's default) and
         vmap(jax.grad(loss)) over the seeds. First call and warm.

Results: a Markdown table, and JSON with jax.devices(), the device kind, each cell's peak
device memory where the backend reports it (memory_stats, cumulative in the subprocess),
the verdicts (seeds passed, worst rel_error) and the floor's relative error against autodiff.

Time budget. A full check costs 4n + 2 loss evaluations per seed (jgc's stencil at h and
2h, J(θ) twice), the floor 2n. The default grid is 273 seeds × 2 dtypes over the three
MLPs: ≈ 94.5 M evaluations for jgc and 47.2 M for the floor, 80% of them on n = 34,645
(≈ 8.9 MFLOP per evaluation with 128 examples; 1.1 MFLOP at n = 8,577): ≈ 1.0 PFLOP for
one call of every cell, about 1–2 minutes at 10–20 TFLOP/s sustained; a first call and up
to --repeat warm calls per cell (one only when the first took over --slow seconds), the
≈ 36 compilations and 6 process starts could take 4–8 minutes. --budget (default 360 s)
caps the run: every subprocess gets the deadline, a cell is skipped, with the reason,
when its time predicted from the previous seed count (scaled by the number of seeds)
would pass it, and a subprocess still running 90 s past the deadline is killed (the
cells it finished are kept), so the run ends within about 7.5 minutes.

Run:
    python benchmarks/gpu.py                       # on the GPU; writes benchmarks/results/gpu.json
    python benchmarks/gpu.py --quick               # tiny sizes, 1 and 4 seeds: any machine
    python benchmarks/gpu.py --sizes mlp8577 --dtypes float32 --seeds 1,16,256,1024 --budget 300
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import _nets  # noqa: E402

SIZES = ["mlp47", "mlp8577", "mlp34645"]


def _device_info():
    import jax

    d = jax.devices()[0]
    return {
        "devices": [str(x) for x in jax.devices()],
        "platform": d.platform,
        "device_kind": getattr(d, "device_kind", None),
        "device_count": jax.device_count(),
    }


def _peak_bytes():
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # not every backend has memory_stats
        return None
    return stats.get("peak_bytes_in_use") if stats else None


def child(model_name, dtype, opts):
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # this subprocess only
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    import jgc

    dt = jnp.dtype(dtype)
    model = _nets.build(model_name, quick=opts.quick, dtype=dt)
    x, y = model.args
    theta0, unravel = ravel_pytree(model.params)
    n = int(theta0.size)
    emit = lambda row: print(json.dumps(row), flush=True)
    emit({"kind": "info", "model": model_name, "dtype": dtype, "n": n, "description": model.description, **_device_info()})
    loss_of_theta = lambda t: model.loss(unravel(t), x, y)
    h = 1e-6 if dtype == "float64" else 1e-2
    previous = {}  # method -> (seeds, first_s, warm_s) of the last cell run

    def floor_program(chunk):
        """One jitted program: the seeds' θ (initialised once), the 2n evaluations and jax.grad, per seed."""
        numeric = _nets.floor_numeric_grad(loss_of_theta, n, h, chunk)

        def program(keys):
            thetas = jax.vmap(lambda k: ravel_pytree(model.init(k))[0])(keys)
            return jax.vmap(numeric)(thetas), jax.vmap(jax.grad(loss_of_theta))(thetas)

        return jax.jit(program)

    timed = _common.timed

    for seeds in opts.seed_list:
        keys = jax.random.split(jax.random.PRNGKey(0), seeds)
        for method in ("jgc", "floor"):
            row = {"kind": "cell", "model": model_name, "dtype": dtype, "n": n, "seeds": seeds, "method": method}
            if method in previous:  # predict this cell from the previous seed count
                s0, first0, warm0 = previous[method]
                run = warm0 * seeds / s0
                first_predicted = (first0 - warm0) + run
                row["predicted_s"] = first_predicted + run * (opts.repeat if first_predicted <= opts.slow else 1)
                if time.time() + row["predicted_s"] > opts.deadline:
                    row["skipped"] = f"predicted {row['predicted_s']:.0f} s from {s0} seeds, over the --budget deadline"
                    emit(row)
                    continue
            if method == "jgc":
                fn = lambda: jgc.check_seeds(model.loss, model.grad, model.init, keys, x, y)  # noqa: B023
                row["num_evals"] = None
            else:
                chunk = _nets.floor_chunk(n, dt.itemsize, opts.chunk_mb * 2**20, batch=seeds)
                floor = floor_program(chunk)
                fn = lambda: floor(keys)  # noqa: B023
                row.update(chunk=chunk, h=h, num_evals=2 * n)
            out, first = timed(fn)
            warm = [timed(fn)[1] for _ in range(opts.repeat if first <= opts.slow else 1)]
            row.update(first_s=first, warm_s=statistics.median(warm), warm_all_s=warm, peak_device_bytes=_peak_bytes())
            if method == "jgc":
                row.update(
                    num_evals=int(np.asarray(out.num_evals).reshape(-1)[0]),
                    passed=int(np.sum(np.asarray(out.passed))),
                    max_rel_error=float(np.max(np.asarray(out.rel_error))),
                )
            else:
                num, g = np.asarray(out[0], np.float64), np.asarray(out[1], np.float64)
                rel = np.linalg.norm(num - g, axis=1) / (np.linalg.norm(num, axis=1) + np.linalg.norm(g, axis=1))
                row["max_rel_error_vs_autodiff"] = float(np.max(rel))
            row["evals_per_s"] = seeds * row["num_evals"] / row["warm_s"]
            previous[method] = (seeds, first, row["warm_s"])
            emit(row)


def table(rows):
    lines = [
        "| model | dtype | seeds | jgc first | jgc warm | floor first | floor warm | warm ÷ floor | jgc evals/s | passed | worst rel_error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = {(r["model"], r["dtype"], r["seeds"], r["method"]): r for r in rows if r.get("kind") == "cell"}
    fmt = lambda s: "–" if s is None else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
    for (model, dtype, seeds, method), j in cells.items():
        if method != "jgc":
            continue
        f = cells.get((model, dtype, seeds, "floor"), {})
        if "skipped" in j:
            lines.append(
                f"| {model} (n = {j['n']:,}) | {dtype} | {seeds} | skipped: {j['skipped']} | | {fmt(f.get('first_s'))} | {fmt(f.get('warm_s'))} | | | | |"
            )
            continue
        ratio = f"{j['warm_s'] / f['warm_s']:.2g}×" if f.get("warm_s") else "–"
        lines.append(
            f"| {model} (n = {j['n']:,}) | {dtype} | {seeds} | {fmt(j['first_s'])} | {fmt(j['warm_s'])} | {fmt(f.get('first_s'))} | "
            f"{fmt(f.get('warm_s'))} | {ratio} | {j['evals_per_s']:.3g} | {j['passed']}/{seeds} | {j['max_rel_error']:.1e} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help=f"comma-separated, of {SIZES} (default: all)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--seeds", default=None, help="comma-separated seed counts (default 1,16,256; --quick 1,4)")
    ap.add_argument("--repeat", type=int, default=3, help="warm calls per cell (median reported)")
    ap.add_argument("--slow", type=float, default=30.0, help="one warm call only when the first took longer (s)")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the whole run (default 360; --quick 1800); cells predicted to overrun are skipped",
    )
    ap.add_argument("--chunk-mb", type=float, default=64.0, help="the floor's perturbed copies of θ per chunk, all seeds (MB)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny models (benchmarks/_nets.py quick sizes), seeds 1,4, one warm call"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    opts.seeds = opts.seeds or ("1,4" if opts.quick else "1,16,256")
    opts.seed_list = [int(s) for s in opts.seeds.split(",")]
    if opts.quick:
        opts.repeat = min(opts.repeat, 1)
    opts.budget = opts.budget or (1800.0 if opts.quick else 360.0)
    if opts.child:
        opts.deadline = opts.deadline or time.time() + opts.budget
        child(*opts.child, opts)
        return

    import importlib.metadata as md

    start = time.time()
    deadline = start + opts.budget
    result = {
        "machine": _common.machine(),
        "versions": _common.versions("jax", "jaxlib"),
        "command": " ".join(["python benchmarks/gpu.py", *sys.argv[1:]]),
        "budget_s": opts.budget,
        "rows": [],
    }
    for plugin in ("jax-cuda12-plugin", "jax-cuda13-plugin"):
        try:
            result["versions"][plugin] = md.version(plugin)
        except md.PackageNotFoundError:
            pass
    out = (
        pathlib.Path(opts.out)
        if opts.out
        else pathlib.Path(__file__).parent / "results" / ("gpu_quick.json" if opts.quick else "gpu.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    sizes = (opts.sizes or ",".join(SIZES)).split(",")
    failed = []
    for model in sizes:
        for dtype in opts.dtypes.split(","):
            cmd = [sys.executable, __file__, "--child", model, dtype, "--deadline", str(deadline), "--seeds", opts.seeds]
            cmd += ["--repeat", str(opts.repeat), "--slow", str(opts.slow), "--chunk-mb", str(opts.chunk_mb)]
            cmd += ["--quick"] if opts.quick else []
            if time.time() > deadline:
                result["rows"].append({"kind": "skipped", "model": model, "dtype": dtype, "skipped": "the --budget was spent"})
                print(f"{model} {dtype}: skipped, the --budget was spent", flush=True)
                continue
            remaining = deadline - time.time() + 90  # a grace period past the deadline for a cell under way
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(remaining, 30))
                stdout, rc, err = proc.stdout, proc.returncode, proc.stderr
            except subprocess.TimeoutExpired as e:
                stdout, rc, err = e.stdout or "", "timeout", e.stderr or ""
                stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
                err = err.decode() if isinstance(err, bytes) else err
            rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            result["rows"] += rows
            if rc != 0:
                failed.append(f"{model} {dtype}: {rc}")
                result["rows"].append(
                    {"kind": "error", "model": model, "dtype": dtype, "returncode": rc, "stderr_tail": err[-3000:]}
                )
            for r in rows:
                if r["kind"] == "info":
                    result.setdefault("device", {k: r[k] for k in ("devices", "platform", "device_kind", "device_count")})
                    print(f"{model} {dtype}: n = {r['n']:,}, {r['description']}, on {r['device_kind']}", flush=True)
                elif "skipped" in r:
                    print(f"  {r['method']:<5} {r['seeds']:>4} seeds: skipped: {r['skipped']}", flush=True)
                else:
                    print(
                        f"  {r['method']:<5} {r['seeds']:>4} seeds: first {r['first_s']:8.3f} s  warm {r['warm_s']:8.4f} s  "
                        f"{r['evals_per_s']:.3g} evals/s",
                        flush=True,
                    )
            if rc != 0:
                print(f"  subprocess failed ({rc}): {err.strip()[-500:]}", flush=True)
            out.write_text(json.dumps(result, indent=1))
    result["wall_s"] = time.time() - start
    out.write_text(json.dumps(result, indent=1))
    print()
    print(table(result["rows"]))
    print(f"\n{result['wall_s']:.0f} s in all; wrote {out}")
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main()
