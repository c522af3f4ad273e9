"""A full gradient check by jgc and by its peers, side by side, on the same models, in one run.

Every (model, method) cell runs in a fresh subprocess of its own, so its first call pays its
own tracing and compilation and its peak RSS is its own; all cells of a table come from one
run, so they share the machine's load. float64 throughout (x64 is enabled in the cell's
process only). Methods:

  jgc              jgc.check_grad(loss, grad, params, x, y), the hand-written gradient
  jgc_plain        the same with partial_eval=False: the plain engine (the whole loss per probe)
  scipy            scipy.optimize.check_grad on the flat float64 θ (ravel_pytree), driven by the
                   jitted loss and the jitted hand-written gradient: n + 1 loss calls (forward
                   differences, step √ε)
  torch            torch.autograd.gradcheck(fast_mode=False) on the same model written in torch
                   (float64, default tolerances). It checks torch's autograd gradient (a JAX
                   backward pass cannot be handed to torch); its cost is the numerical Jacobian,
                   2n forward calls. Skipped, with the reason, when 2n × one forward call is
                   estimated over --torch-budget seconds. On a loaded machine torch's OpenMP
                   threads can make a small forward call 100× slower (30 ms instead of 0.1 ms
                   for n = 8,577 on 2 busy cores): use --torch-threads 1 there.
  course           the course's loop: for each i, θ ± ε·e_i in NumPy and one jitted loss call
                   each (2n calls), ε = 1e-7, then the relative error
  floor            the bare floor: jit(vmap(loss of θ)) over the 2n points θ ± h·e_i (h = 1e-6),
                   in chunks run by lax.map, plus jit(jax.grad(loss)) compiled and run once.
                   A full central-difference check cannot cost less, as long as batching the
                   loss with vmap pays (the ratios use this floor)
  floor_seq        the same 2n evaluations one at a time in one compiled loop (lax.map, no
                   vmap) plus jit(jax.grad(loss)): the floor where vmap does not pay (vmap of a
                   convolution over perturbed kernels is a grouped convolution, which XLA:CPU
                   runs far slower than the same number of plain convolutions)

"first" is the first call in the fresh process (tracing and compilation included; the JAX
backend is already up, since building the model uses it). "warm" is the median of --repeat
further calls, skipped when the first call took over --slow seconds (then the cell has one
timing). Before a model's cells, a separate subprocess compares its hand-written gradient
with jax.grad and with torch's autograd of the twin (so the timed cells start cold), and
stops the run if they disagree.

Models (benchmarks/_nets.py): tanh MLPs with (k, 1) column biases, n = 47 (4-5-3-1, the
classic course network's shape), 8,577 (100-64-32-1), 34,645 (200-128-64-10-1); a CNN (two
3×3 lax.conv_general_dilated layers 1→8→16 channels on 12×12 images, dense 1024→5→1,
n = 6,379); an RNN (tanh cell, 15 steps of lax.scan, 48 hidden units, n = 2,785).

Run (writes benchmarks/results/peers.json after every cell, then prints a Markdown table
with each time's ratio to scipy's and to the floor's):

    python benchmarks/peers.py                   # every model and method (an hour or more on 2 cores;
        # on the CNN, jgc and the vmapped floor each ran past 900 s on a loaded 2-core machine,
        # floor_seq took 4.5 s: raise --timeout, or leave the CNN to --sizes runs of its own)
    python benchmarks/peers.py --quick --verify  # tiny models: checks that the script works
    python benchmarks/peers.py --sizes mlp47,mlp8577 --methods jgc,scipy,floor --repeat 5
    python benchmarks/peers.py --table benchmarks/results/peers.json   # print the table of a saved run

--verify adds, in the jgc cell and after its timings, jgc.numeric_grad and scipy's
approx_fprime compared with each other and with the hand-written gradient.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import _nets  # noqa: E402

METHODS = ["jgc", "jgc_plain", "scipy", "torch", "course", "floor", "floor_seq"]
RESULTS = pathlib.Path(__file__).parent / "results"


# ---------------------------------------------------------------- one cell (runs in its own process)


def _first_and_warm(fn, opts):
    """First call, then opts.repeat warm calls (none when the first took over opts.slow s)."""
    return _common.first_and_warm(fn, opts.repeat, opts.slow)


def _times(row, first, warm):
    row["first_s"] = first
    row["warm_s"] = statistics.median(warm) if warm else None
    row["warm_all_s"] = warm


def cell(model_name, method, opts):
    import jax

    jax.config.update("jax_enable_x64", True)  # this subprocess only
    import numpy as np

    model = _nets.build(model_name, quick=opts.quick)
    theta, loss_of_theta, grad_of_theta = _nets.flat(model)
    n = int(theta.size)
    row = {"model": model_name, "method": method, "n": n, "description": model.description}

    if method == "verify":
        row.update(_nets.verify(model, with_torch=True))
        return row

    row["base_rss_mb"] = _common.rss_mb()
    if method in ("jgc", "jgc_plain"):
        import jgc

        kwargs = _nets.jgc_kwargs(method)
        fn = lambda: jgc.check_grad(model.loss, model.grad, model.params, *model.args, **kwargs)
        res, first, warm = _first_and_warm(fn, opts)
        _times(row, first, warm)
        row.update(passed=bool(res.passed), rel_error=float(res.rel_error), num_evals=int(res.num_evals))
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if opts.verify:  # after the timings and the RSS reading
            from jax.flatten_util import ravel_pytree
            from scipy.optimize import approx_fprime

            num = np.asarray(ravel_pytree(jgc.numeric_grad(model.loss, model.params, *model.args, **kwargs))[0])
            f = jax.jit(loss_of_theta)
            fd = approx_fprime(np.asarray(theta), lambda t: float(f(t)))
            g = np.asarray(grad_of_theta(theta))
            rel = lambda a, b: float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))
            row["verify"] = {
                "jgc_numeric_vs_hand": rel(num, g),
                "scipy_forward_vs_hand": rel(fd, g),
                "jgc_numeric_vs_scipy_forward": rel(num, fd),
                "max_abs_jgc_minus_scipy": float(np.max(np.abs(num - fd))),
            }
        return row

    if method in ("scipy", "course"):
        f_jit, g_jit = jax.jit(loss_of_theta), jax.jit(grad_of_theta)
        x0 = np.asarray(theta)
        if method == "scipy":
            from scipy.optimize import check_grad

            fn = lambda: check_grad(lambda t: float(f_jit(t)), lambda t: np.asarray(g_jit(t)), x0)
            err, first, warm = _first_and_warm(fn, opts)
            gnorm = float(np.linalg.norm(np.asarray(g_jit(x0))))
            row.update(abs_error=float(err), rel_error_approx=float(err) / (2 * gnorm), num_evals=n + 1)
        else:

            def fn(eps=1e-7):
                approx = np.empty(n)
                for i in range(n):
                    plus, minus = x0.copy(), x0.copy()
                    plus[i] += eps
                    minus[i] -= eps
                    approx[i] = (float(f_jit(plus)) - float(f_jit(minus))) / (2 * eps)
                g = np.asarray(g_jit(x0))
                return np.linalg.norm(approx - g) / (np.linalg.norm(approx) + np.linalg.norm(g))

            rel, first, warm = _first_and_warm(fn, opts)
            row.update(rel_error=float(rel), num_evals=2 * n)
        _times(row, first, warm)

    elif method == "torch":
        import torch

        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        fn = _nets.torch_flat_loss(model)
        x = torch.from_numpy(np.array(theta)).requires_grad_(True)
        per_call = []
        with torch.no_grad():
            for _ in range(5):
                t = time.perf_counter()
                fn(x)
                per_call.append(time.perf_counter() - t)
        per_call = statistics.median(per_call)
        row.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads(), forward_call_s=per_call)
        row["estimated_s"] = per_call * 2 * n
        if row["estimated_s"] > opts.torch_budget:
            row["skipped"] = (
                f"estimated {row['estimated_s']:.0f} s (2n = {2 * n:,} forward calls × {per_call * 1e3:.2f} ms) "
                f"> --torch-budget {opts.torch_budget:.0f} s"
            )
            return row
        check = lambda: torch.autograd.gradcheck(fn, (x,), fast_mode=False, raise_exception=False)
        t = time.perf_counter()
        ok = check()
        first = time.perf_counter() - t
        warm = []
        if first <= opts.slow:
            for _ in range(opts.repeat):
                t = time.perf_counter()
                check()
                warm.append(time.perf_counter() - t)
        _times(row, first, warm)
        row.update(passed=bool(ok), num_evals=2 * n)

    elif method in ("floor", "floor_seq"):
        h = 1e-6
        chunk = opts.chunk or _nets.floor_chunk(n, theta.dtype.itemsize)
        if method == "floor":
            evals = jax.jit(_nets.floor_numeric_grad(loss_of_theta, n, h, chunk))
        else:
            chunk, evals = 1, jax.jit(_nets.floor_sequential_numeric_grad(loss_of_theta, n, h))
        grad = jax.jit(jax.grad(loss_of_theta))
        t = time.perf_counter()
        evals_c = evals.lower(theta).compile()
        row["evals_compile_s"] = time.perf_counter() - t
        num, row["evals_first_run_s"] = _common.timed(lambda: evals_c(theta))
        t = time.perf_counter()
        grad_c = grad.lower(theta).compile()
        row["grad_compile_s"] = time.perf_counter() - t
        _, row["grad_first_run_s"] = _common.timed(lambda: grad_c(theta))
        first = row["evals_compile_s"] + row["evals_first_run_s"] + row["grad_compile_s"] + row["grad_first_run_s"]
        warm = []
        if first <= opts.slow:
            for _ in range(opts.repeat):
                warm.append(_common.timed(lambda: evals_c(theta))[1] + _common.timed(lambda: grad_c(theta))[1])
        _times(row, first, warm)
        g = np.asarray(grad_of_theta(theta))
        num = np.asarray(num)
        row.update(
            chunk=chunk,
            h=h,
            num_evals=2 * n,
            rel_error=float(np.linalg.norm(num - g) / (np.linalg.norm(num) + np.linalg.norm(g))),
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


# ---------------------------------------------------------------- the run


def _child_cmd(model, method, opts):
    cmd = [sys.executable, __file__, "--one", model, method, "--repeat", str(opts.repeat), "--slow", str(opts.slow)]
    cmd += ["--torch-budget", str(opts.torch_budget), "--torch-threads", str(opts.torch_threads), "--chunk", str(opts.chunk)]
    return cmd + (["--quick"] if opts.quick else []) + (["--verify"] if opts.verify else [])


def run_cell(model, method, opts):
    load = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        proc = subprocess.run(_child_cmd(model, method, opts), capture_output=True, text=True, timeout=opts.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "method": method, "skipped": f"timed out after {opts.timeout:.0f} s (--timeout)"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"model": model, "method": method, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(process_wall_s=wall, load_before=load, load_after=os.getloadavg()[0])
    return row


def _fmt_s(s):
    if s is None:
        return "–"
    return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s:.2f} s" if s < 100 else f"{s:,.0f} s"


def _ratio(a, b):
    return f"{a / b:.2g}×" if a is not None and b else "–"


def _outcome(r):
    if "error" in r:
        return "error: " + r["error"].splitlines()[-1][:100]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    m = r["method"]
    if m.startswith("jgc"):
        return f"{'passed' if r['passed'] else 'NOT passed'}, rel {r['rel_error']:.1e}"
    if m == "scipy":
        return f"‖Δ‖ {r['abs_error']:.1e} (rel ≈ {r['rel_error_approx']:.1e})"
    if m == "torch":
        return "passed" if r["passed"] else "NOT passed"
    return f"rel {r['rel_error']:.1e}"


def table(rows):
    lines = [
        "| model | method | loss evals | first call | warm | peak RSS | warm ÷ scipy | first ÷ floor | warm ÷ floor | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["method"]] = r
    for model, cells in by_model.items():
        scipy, floor = cells.get("scipy", {}), cells.get("floor", {})
        n = next((c["n"] for c in cells.values() if "n" in c), None)
        label = f"{model} (n = {n:,})" if n else model
        for method, r in cells.items():
            if method == "verify":
                continue
            warm, first = r.get("warm_s"), r.get("first_s")
            scipy_time = scipy.get("warm_s") or scipy.get("first_s")
            rss = f"{r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "–"
            evals = f"{r['num_evals']:,}" if "num_evals" in r else "–"
            lines.append(
                f"| {label} | {method} | {evals} | {_fmt_s(first)} | {_fmt_s(warm)} | {rss} | {_ratio(warm or first, scipy_time)} | "
                f"{_ratio(first, floor.get('first_s'))} | {_ratio(warm, floor.get('warm_s'))} | {_outcome(r)} |"
            )
            label = ""
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(_nets.MODELS), help=f"models, comma-separated, of {_nets.MODELS}")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"methods, comma-separated, of {METHODS}")
    ap.add_argument("--repeat", type=int, default=3, help="warm calls after the first (their median is reported)")
    ap.add_argument("--slow", type=float, default=120.0, help="no warm calls when the first took more seconds than this")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell (its subprocess is killed after)")
    ap.add_argument("--torch-budget", type=float, default=600.0, help="skip torch gradcheck when estimated over this")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads in the torch cells (0: torch's default)")
    ap.add_argument("--chunk", type=int, default=0, help="coordinates per chunk of the floor (0: ~64 MB of perturbed θ)")
    ap.add_argument("--quick", action="store_true", help="tiny models of the same structure")
    ap.add_argument("--verify", action="store_true", help="in the jgc cells: compare jgc's and scipy's numeric gradients")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/peers[_quick].json)")
    ap.add_argument("--table", default=None, metavar="JSON", help="only print the table of a saved run")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    opts = ap.parse_args()

    if opts.one:
        print(json.dumps(cell(*opts.one, opts)))
        return
    if opts.table:
        print(table(json.loads(pathlib.Path(opts.table).read_text())["rows"]))
        return
    models, methods = opts.sizes.split(","), opts.methods.split(",")
    for name, known in ((models, _nets.MODELS), (methods, METHODS)):
        unknown = set(name) - set(known)
        if unknown:
            ap.error(f"unknown {sorted(unknown)}; known: {known}")
    out = pathlib.Path(opts.out) if opts.out else RESULTS / ("peers_quick.json" if opts.quick else "peers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": _common.machine(packages=("jax", "jaxlib", "numpy", "scipy", "torch")),
        "command": " ".join(["python benchmarks/peers.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": [],
    }
    for model in models:
        check = run_cell(model, "verify", opts)
        result["rows"].append(check)
        if "error" in check or check["hand_vs_jax_grad_rel"] > 1e-12 or check["hand_vs_torch_grad_rel"] > 1e-12:
            out.write_text(json.dumps(result, indent=1))
            sys.exit(f"{model}: the hand-written gradient or the torch twin disagrees: {check}")
        print(
            f"{model}: n = {check['n']:,}, {check['description']}; hand-written gradient vs jax.grad {check['hand_vs_jax_grad_rel']:.1e}, vs torch {check['hand_vs_torch_grad_rel']:.1e}",
            flush=True,
        )
        for method in methods:
            row = run_cell(model, method, opts)
            result["rows"].append(row)
            out.write_text(json.dumps(result, indent=1))  # after every cell: an interrupted run keeps what it measured
            print(
                f"  {method:<12} first {_fmt_s(row.get('first_s')):>9}  warm {_fmt_s(row.get('warm_s')):>9}  {_outcome(row)}",
                flush=True,
            )
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out.write_text(json.dumps(result, indent=1))
    print()
    print(table(result["rows"]))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
