"""What the benchmarks share: paths, machine facts, timers, tables and JSON, and the row-convention models.

- `ROOT`, `RESULTS`, `use_tests()` (puts tests/ on sys.path for `import corpus`);
- `machine()`: platform, processor, CPU counts, Python and package versions (optionally
  the JAX device); `versions(...)`;
- `timed(fn)`, `first_and_best(fn, repeat)`, `first_and_warm(fn, repeat, slow)`: wall
  times of calls that return JAX arrays (blocked until ready); `rss_mb()`;
- `pct`, `markdown_table`, `write_json`: the tables and files the scripts write;
- the tanh MLP with the row convention (x (m, in) @ W (in, out), biases (out,), loss
  0.5·mean((out − y)²) + 0.5·l2·Σ‖W‖², its hand-written gradient) and the wide
  least-squares problem: used by modes.py, seeds.py, scaling.py and full_check.py. The
  column-convention models with torch twins (W (out, in), X (features, m)) are in _nets.py.

Importing this module imports jax but changes no JAX setting.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def use_tests() -> None:
    """Make tests/ (the corpus) and the repository root importable."""
    for p in (str(ROOT / "tests"), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)


# ---------------------------------------------------------------- machine facts


def versions(*packages: str) -> dict:
    """Installed versions of `packages` (None where not installed)."""
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def machine(packages=("jax", "jaxlib", "numpy"), device: bool = False) -> dict:
    """What ran the benchmark. `device=True` adds the first JAX device (this initialises the backend)."""
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        **versions(*packages),
    }
    if device:
        out["device"] = str(jax.devices()[0])
    return out


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------- timers


def timed(fn):
    """(fn(), seconds) for one call, its JAX arrays blocked until ready."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def first_and_best(fn, repeat: int = 2):
    """(output of the last call, seconds of the first call (compile included), best of `repeat` more)."""
    out, first = timed(fn)
    best = float("inf")
    for _ in range(repeat):
        out, t = timed(fn)
        best = min(best, t)
    return out, first, best


def first_and_warm(fn, repeat: int, slow: float = float("inf")):
    """(output, first call's seconds, the `repeat` warm calls' seconds: none when the first took over `slow`)."""
    out, first = timed(fn)
    warm = [] if first > slow else [timed(fn)[1] for _ in range(repeat)]
    return out, first, warm


def median(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- tables and files


def pct(a, b) -> str:
    """'12% (3/25)', or '–' when there is nothing to count."""
    return f"{100 * a / b:.0f}% ({a}/{b})" if b else "–"


def markdown_table(head, rows) -> str:
    """A Markdown table: `head` a list of column names, `rows` lists of cells (str() of each)."""
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path, obj) -> pathlib.Path:
    """Write `obj` as indented JSON (creating the folder)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def command() -> str:
    """How this script was run, for the results' metadata."""
    return "python " + " ".join(sys.argv)


# ---------------------------------------------------------------- the tanh MLP, row convention


def mlp_init(key, sizes=(8, 32, 32, 4), dtype=jnp.float64, bias_scale=0.1):
    """Layers {W (in, out) ~ N(0, 1/in), b (out,) ~ bias_scale·N(0, 1)} (b = 0 exactly for bias_scale=0)."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "W": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(m),
            "b": bias_scale * jax.random.normal(jax.random.fold_in(k, 1), (n,), dtype) if bias_scale else jnp.zeros(n, dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def classic_init(key, dtype=jnp.float64):
    """The classic course's gradient-checking network's shape: 3 inputs, 5 hidden units, 3 outputs."""
    return mlp_init(key, (3, 5, 3), dtype)


def mlp_loss(params, x, y, l2=1e-3):
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None])
    out = h @ params[-1]["W"] + params[-1]["b"][None]
    mse = 0.5 * jnp.mean((out - y) ** 2)
    return mse + 0.5 * l2 * sum(jnp.sum(p["W"] ** 2) for p in params) if l2 else mse  # l2=0: no term at all


def mlp_grad(params, x, y, l2=1e-3):
    acts = [x]
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"] + layer["b"][None])
        acts.append(h)
    out = h @ params[-1]["W"] + params[-1]["b"][None]
    delta = (out - y) / out.size
    grads = []
    for i in reversed(range(len(params))):
        a = acts[i]
        grads.append({"W": a.T @ delta + l2 * params[i]["W"] if l2 else a.T @ delta, "b": delta.sum(0)})
        if i:
            delta = (delta @ params[i]["W"].T) * (1 - a**2)
    return grads[::-1]


def data(key, n_in, n_out, m=16, dtype=jnp.float64):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (m, n_in), dtype), jax.random.normal(ky, (m, n_out), dtype)


def wide_problem(n, leaves=4, dtype=jnp.float64, seed=0):
    """A cheap, well-conditioned loss on n parameters (nonlinear least squares near a fit)."""
    sizes = [n // leaves] * (leaves - 1) + [n - (n // leaves) * (leaves - 1)]
    keys = jax.random.split(jax.random.key(seed), 2 * leaves)
    p = {f"w{i}": 0.5 * jax.random.normal(keys[i], (s,), dtype) for i, s in enumerate(sizes)}
    y = {k: jnp.tanh(v) + 1e-2 * jax.random.normal(keys[leaves + i], v.shape, dtype) for i, (k, v) in enumerate(p.items())}
    return p, y


def wide_loss(p, y):
    return sum(0.5 * jnp.sum((jnp.tanh(p[k]) - y[k]) ** 2) for k in p)


def wide_grad(p, y):
    return {k: (jnp.tanh(p[k]) - y[k]) * (1 - jnp.tanh(p[k]) ** 2) for k in p}
