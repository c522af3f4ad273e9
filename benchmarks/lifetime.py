"""Many checks in one process: do memory maps and RSS grow with the number of checks? (issue 9)

A test suite runs thousands of checks in one process; each check of a new function
compiles an executable, and an executable that outlives its check keeps memory maps
(XLA:CPU maps code pages) and RSS. A process has a limit on its maps (vm.max_map_count,
often 65,530); past it, mmap fails and JAX may crash (SIGSEGV).

Variants, each in a fresh subprocess (float64 unless --dtype float32):

  distinct   --checks checks of *distinct* functions: each iteration builds a fresh closure
             loss and grad (new function objects, closing over a new Python float) for a
             5-parameter model, runs jgc.check_grad on them, then deletes the functions and
             the result before the next iteration
  same       the same loss and grad function objects, reused for every check: after the
             first check (compilation), it should add about 0 maps
  bare_jit   the reference (not a check): like distinct, but each iteration only calls a new
             jax.jit(lambda p, x: (loss(p, x), grad(p, x))) once, then deletes it: what JAX
             itself keeps per distinct compiled function

Every --every checks (and before the first and after the first check) the subprocess
records the number of memory maps (lines of /proc/self/maps), the RSS (VmRSS of
/proc/self/status), the XLA compilations so far (jax.monitoring's
/jax/core/compile/backend_compile_duration events) and the elapsed time. It prints each
sample as it goes, so a run that dies keeps its curve. Reported: maps and RSS added per
check on average after the first check, and the curves. The script exits non-zero if a
subprocess dies (e.g. SIGSEGV, or killed for memory).

Run:
    python benchmarks/lifetime.py                 # 400 checks each; writes benchmarks/results/lifetime.json
    python benchmarks/lifetime.py --quick         # 60 checks, samples every 20
    python benchmarks/lifetime.py --checks 2000 --every 250 --gc   # gc.collect() after every check
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def child(variant, checks, every, dtype, collect):
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # this subprocess only
    import jax.monitoring
    import jax.numpy as jnp

    import jgc

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _common

    compiles = [0]
    jax.monitoring.register_event_duration_secs_listener(
        lambda e, d, **k: compiles.__setitem__(0, compiles[0] + (e == COMPILE_EVENT))
    )

    params = {"w": jnp.asarray([0.3, -0.2, 0.5], dtype), "b": jnp.asarray([0.1, -0.4], dtype)}
    x = jnp.linspace(-1.0, 1.0, 8, dtype=dtype)

    def make(scale):
        """A 5-parameter model: loss = Σ tanh(scale · (w·φ(x) + b))², with its hand-written gradient."""

        def loss(p, x):
            feats = jnp.stack([x, x**2, jnp.sin(x)])  # (3, m)
            z = scale * (p["w"] @ feats)[None] + scale * p["b"][:, None]  # (2, m)
            return jnp.sum(jnp.tanh(z) ** 2)

        def grad(p, x):
            feats = jnp.stack([x, x**2, jnp.sin(x)])
            t = jnp.tanh(scale * (p["w"] @ feats)[None] + scale * p["b"][:, None])
            dz = 2 * t * (1 - t**2) * scale  # (2, m)
            return {"w": feats @ dz.sum(0), "b": dz.sum(1)}

        return loss, grad

    same = make(1.0)
    t0 = time.perf_counter()

    def sample(done, passed):
        print(
            json.dumps(
                {
                    "checks": done,
                    "maps": _maps(),
                    "rss_mb": _common.rss_mb(),
                    "compiles": compiles[0],
                    "elapsed_s": time.perf_counter() - t0,
                    "all_passed": passed,
                }
            ),
            flush=True,
        )

    all_passed = None if variant == "bare_jit" else True  # bare_jit runs no check
    sample(0, all_passed)
    for i in range(checks):
        loss, grad = same if variant == "same" else make(1.0 + 1e-3 * i)
        if variant == "bare_jit":  # the reference: JAX alone, a new jitted function per iteration
            res = jax.jit(lambda p, x, loss=loss, grad=grad: (loss(p, x), grad(p, x)))(params, x)
            jax.block_until_ready(res)
        else:
            res = jgc.check_grad(loss, grad, params, x)
            all_passed &= bool(res.passed)
        del loss, grad, res
        if collect:
            gc.collect()
        if i == 0 or (i + 1) % every == 0 or i + 1 == checks:
            sample(i + 1, all_passed)


def _machine():
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import _common

    return _common.machine()


def run_variant(variant, opts):
    """Run one variant in a subprocess, printing its samples as they come (a long run shows its progress)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--checks",
        str(opts.checks),
        "--every",
        str(opts.every),
        "--dtype",
        opts.dtype,
    ]
    cmd += ["--gc"] if opts.gc else []
    t = time.perf_counter()
    print(f"{variant}:\n  checks    maps   RSS (MB)  compiles  elapsed (s)", flush=True)
    samples = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        timed_out = threading.Event()
        timer = threading.Timer(opts.timeout, lambda: (timed_out.set(), proc.kill()))
        timer.start()
        for line in proc.stdout:
            if line.startswith("{"):
                s = json.loads(line)
                samples.append(s)
                print(
                    f"  {s['checks']:>6} {s['maps']:>7} {s['rss_mb']:>10.1f} {s['compiles']:>9} {s['elapsed_s']:>12.1f}",
                    flush=True,
                )
        returncode = proc.wait()
        timer.cancel()
        err.seek(0)
        stderr = err.read()
    out = {"variant": variant, "returncode": returncode, "wall_s": time.perf_counter() - t, "samples": samples}
    if returncode != 0:
        out["stderr_tail"] = stderr.strip()[-3000:]
        out["killed_after_timeout"] = timed_out.is_set()
    first = next((s for s in samples if s["checks"] == 1), None)
    last = samples[-1] if samples else None
    if first and last and last["checks"] > 1:
        k = last["checks"] - 1
        out.update(
            checks_done=last["checks"],
            maps_before=samples[0]["maps"],
            maps_after_first=first["maps"],
            maps_end=last["maps"],
            maps_per_check=(last["maps"] - first["maps"]) / k,
            rss_mb_after_first=first["rss_mb"],
            rss_mb_end=last["rss_mb"],
            rss_mb_per_check=(last["rss_mb"] - first["rss_mb"]) / k,
            compiles_per_check=(last["compiles"] - first["compiles"]) / k,
            seconds_per_check=(last["elapsed_s"] - first["elapsed_s"]) / k,
            all_passed=last["all_passed"],
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=400)
    ap.add_argument("--every", type=int, default=50, help="sample maps and RSS every this many checks")
    ap.add_argument("--variants", default="distinct,same,bare_jit", help="comma-separated: distinct, same, bare_jit")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--gc", action="store_true", help="gc.collect() after every check")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per variant")
    ap.add_argument("--quick", action="store_true", help="60 checks, a sample every 20")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        child(opts.child, opts.checks, opts.every, opts.dtype, opts.gc)
        return
    if opts.quick:
        opts.checks, opts.every = 60, 20
    unknown = set(opts.variants.split(",")) - {"distinct", "same", "bare_jit"}
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")

    result = {
        "machine": _machine(),
        "command": " ".join(["python benchmarks/lifetime.py", *sys.argv[1:]]),
        "checks": opts.checks,
        "dtype": opts.dtype,
        "gc_collect_each_check": opts.gc,
        "variants": {},
    }
    out = (
        pathlib.Path(opts.out)
        if opts.out
        else pathlib.Path(__file__).parent / "results" / ("lifetime_quick.json" if opts.quick else "lifetime.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    died = []
    for variant in opts.variants.split(","):
        r = run_variant(variant, opts)
        result["variants"][variant] = r
        out.write_text(json.dumps(result, indent=1))
        print(f"  exit {r['returncode']}, {r['wall_s']:.1f} s")
        if "maps_per_check" in r:
            print(
                f"  after the first check: {r['maps_per_check']:+.2f} maps/check, {r['rss_mb_per_check']:+.3f} MB/check, "
                f"{r['compiles_per_check']:.2f} compiles/check, {r['seconds_per_check'] * 1e3:.1f} ms/check; all passed: {r['all_passed']}"
            )
        if r["returncode"] != 0:
            died.append(variant)
            why = f"killed after --timeout {opts.timeout:.0f} s" if r["killed_after_timeout"] else r["stderr_tail"][-500:]
            print(f"  the process died: {why}")
    print(f"wrote {out}")
    if died:
        sys.exit(f"process died in: {', '.join(died)}")


if __name__ == "__main__":
    main()
