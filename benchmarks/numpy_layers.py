"""jgc on NumPy layer pairs, against the course's own checker loop, on the same layers (issue 16).

For each CS231n-style layer of tests/_cs231n.py (affine, relu, batchnorm, conv, max-pool with
overlapping windows, one RNN step), correct and with its planted bug, in one process:

  jgc     jgc.check_layer(forward, backward, *inputs, key=key, host=True): the NumPy forward runs
          on the host through jax.pure_callback, one point per call (host=True: also the affine
          layer, whose NumPy code happens to trace and would otherwise be compiled); first call (tracing and compiling
          the callback programs included) and the median of --repeat warm calls; the verdict,
          the failing leaves, the host calls and the time spent inside `forward`, and jgc's
          overhead per host call: (warm wall time − time inside forward) / host calls
  course  the course's loop: for each input, eval_numerical_gradient_array (the classic centered
          difference, h = 1e-5, one forward call per ±h) with the same dout, then the course's
          rel_error = max |a − b| / max(1e-8, |a| + |b|) per input; its verdict is that number
          against the course's rule of thumb (below 1e-7: correct)

Run:
    python benchmarks/numpy_layers.py                        # float64, writes benchmarks/results/numpy_layers.json
    python benchmarks/numpy_layers.py --dtypes float64,float32 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _common

_common.use_tests()

import _cs231n as L  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

import jgc  # noqa: E402

H = 1e-5
COURSE_OK = 1e-7  # the course's rule of thumb for a correct layer in float64


def eval_numerical_gradient_array(f, x, df, h=H):
    """The course's loop: the numeric gradient of Σ f(x) · df in x, one coordinate at a time."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = f(x).copy()
        x[ix] = oldval - h
        neg = f(x).copy()
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def rel_error(x, y):
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def course(forward, backward, inputs, dout):
    """(seconds, forward calls, max rel_error per input name) of the course's check."""
    import copy

    names = [n for n, x in zip(_names(forward), inputs, strict=False) if isinstance(x, np.ndarray)]
    floats = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray)]
    calls = 0
    t0 = time.perf_counter()
    xs = [x.copy() if isinstance(x, np.ndarray) else copy.deepcopy(x) for x in inputs]
    _, cache = forward(*[copy.deepcopy(x) for x in xs])
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    errors = {}
    for name, i, g in zip(names, floats, grads, strict=True):

        def f(xi, i=i):
            nonlocal calls
            calls += 1
            args = [xi if j == i else (x if isinstance(x, np.ndarray) else copy.deepcopy(x)) for j, x in enumerate(xs)]
            return forward(*args)[0]

        errors[name] = rel_error(eval_numerical_gradient_array(f, xs[i], dout), g)
    return time.perf_counter() - t0, calls, errors


def _names(forward):
    import inspect

    return list(inspect.signature(forward).parameters)


def run_jgc(forward, backward, inputs, key, repeat):
    t0 = time.perf_counter()
    res = jgc.check_layer(forward, backward, *inputs, key=key, host=True)
    first = time.perf_counter() - t0
    warm, inside, calls = [], [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = jgc.check_layer(forward, backward, *inputs, key=key, host=True)
        warm.append(time.perf_counter() - t0)
        _, points, inside_s, _ = np.asarray(res.host_cost)  # callbacks, points, seconds inside, seconds in all
        calls = int(points)  # calls of `forward`: one per distinct point
        inside.append(float(inside_s))
    w, ins = statistics.median(warm), statistics.median(inside)
    return dict(
        status=res.status,
        failed=sorted(k for k, v in res.leaf_failed.items() if bool(v)),
        rel_error=float(res.rel_error),
        num_evals=int(res.num_evals),
        host_calls=calls,
        first_s=first,
        warm_s=w,
        inside_forward_s=ins,
        overhead_per_call_ms=1e3 * (w - ins) / max(1, calls),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=",".join(L.LAYERS))
    ap.add_argument("--dtypes", default="float64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(_common.RESULTS / "numpy_layers.json"))
    a = ap.parse_args(argv)
    rows, table = [], []
    for dtype in a.dtypes.split(","):
        for name in a.layers.split(","):
            forward, good, bad, inputs, planted = L.case(name, np.dtype(dtype))
            for variant, backward in (("correct", good), ("bug", bad)):
                with jax.enable_x64(dtype == "float64"):
                    dout = L_dout(forward, inputs, dtype)
                j = run_jgc(forward, backward, inputs, jax.random.key(0), a.repeat)
                ct, ccalls, errors = course(forward, backward, inputs, dout)
                c_verdict = (
                    "correct"
                    if max(errors.values()) < COURSE_OK
                    else "wrong: " + ", ".join(k for k, e in errors.items() if e >= COURSE_OK)
                )
                row = dict(layer=name, dtype=dtype, variant=variant, planted=sorted(planted) if variant == "bug" else [])
                row.update(jgc=j, course=dict(seconds=ct, forward_calls=ccalls, rel_error=errors, verdict=c_verdict))
                rows.append(row)
                jv = j["status"] + (f" ({', '.join(j['failed'])})" if j["failed"] else "")
                table.append(
                    [
                        name,
                        dtype,
                        variant,
                        jv,
                        f"{j['first_s']:.2f} s",
                        f"{j['warm_s'] * 1e3:.0f} ms",
                        f"{j['host_calls']:,}",
                        f"{j['overhead_per_call_ms']:.2f} ms",
                        c_verdict,
                        f"{max(errors.values()):.1e}",
                        f"{ct * 1e3:.0f} ms",
                        f"{ccalls:,}",
                    ]
                )
                print(" | ".join(table[-1]), file=sys.stderr)
    head = ["layer", "dtype", "backward", "jgc verdict", "jgc first", "jgc warm", "host calls", "jgc overhead / call"]
    head += ["course verdict (rel < 1e-7)", "course max rel_error", "course time", "course forward calls"]
    print(_common.markdown_table(head, table))
    meta = dict(command=_common.command(), machine=_common.machine(), h=H, course_ok=COURSE_OK)
    _common.write_json(a.out, dict(meta=meta, rows=rows))


def L_dout(forward, inputs, dtype):
    """The dout jgc.check_layer draws with key 0 (the same upstream gradient for both checkers)."""
    import copy

    out = forward(*[copy.deepcopy(x) for x in inputs])[0]
    return np.asarray(jax.random.normal(jax.random.key(0), out.shape, np.dtype(dtype)))


if __name__ == "__main__":
    main()
