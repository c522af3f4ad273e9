"""The Taylor remainder test against the full per-coordinate check, on an ODE's discrete adjoint.

Run: python benchmarks/taylor.py [--quick]   (writes benchmarks/results/taylor.json)

The model is tests/_ode.py: dy/dt = tanh(W y + b), 20 RK4 steps, loss ½‖y_N − target‖², the
hand-written discrete adjoint of RK4 (right, and with the last stage's parameter term
forgotten). A state of size d has n = d² + d parameters: d = 31 (n = 992) and d = 316
(n = 100,172). float64. For each size:

- `jgc.taylor_test(loss, adjoint, p, y0, target, key=key)`: its loss evaluations (no n in
  them) and wall time, first call (tracing and compilation) and the best of 2 warm calls;
  its verdict on the right and the wrong adjoint;
- `jgc.check_grad(loss, adjoint, p, y0, target)`, the full per-coordinate check: at
  n = 992 run in full (first call and best of 2 warm calls, its verdicts); at n = 100,172
  *estimated*, not run: the warm time and the evaluations of sampled checks (`coords=k`)
  of k = 1,000 and 4,000 coordinates are each fitted by a line a + b·k and evaluated at
  k = n. Say so when quoting it.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _common as M  # noqa: E402

M.use_tests()
import _ode  # noqa: E402

import jgc  # noqa: E402

QUICK = "--quick" in sys.argv
SIZES = (8, 31) if QUICK else (31, 316)  # d; n = d² + d
FULL_UP_TO = 2_000  # the full check is run up to this n, estimated above it
CHUNKS = (100, 400) if QUICK else (1_000, 4_000)  # the sampled checks the estimate is fitted to


def wrong(p, y0, target):
    return _ode.adjoint(p, y0, target, bug=True)


def run_taylor(problem, key):
    right_fn = lambda: jgc.taylor_test(_ode.loss, _ode.adjoint, *problem, key=key)  # noqa: E731
    res, first, warm = M.first_and_best(right_fn)
    bad = jgc.taylor_test(_ode.loss, wrong, *problem, key=key)
    assert res.status == "passed" and bad.status == "failed", (res.report(), bad.report())
    return dict(
        num_evals=int(res.num_evals),
        first_call_seconds=first,
        warm_seconds=warm,
        right=res.status,
        right_rate=float(res.rate),
        wrong=bad.status,
        wrong_rate=float(bad.rate),
    )


def run_full(problem, n):
    fn = lambda: jgc.check_grad(_ode.loss, _ode.adjoint, *problem)  # noqa: E731
    res, first, warm = M.first_and_best(fn)
    bad = jgc.check_grad(_ode.loss, wrong, *problem)
    assert res.status == "passed" and bad.status == "failed", (res.report(), bad.report())
    return dict(
        estimated=False,
        num_evals=int(res.num_evals),
        first_call_seconds=first,
        warm_seconds=warm,
        right=res.status,
        wrong=bad.status,
    )


def estimate_full(problem, n, key):
    """The full check's warm time and evaluations at n, from sampled checks of CHUNKS coordinates."""
    points = []
    for k in CHUNKS:
        fn = lambda: jgc.check_grad(_ode.loss, _ode.adjoint, *problem, coords=k, key=key)  # noqa: B023, E731
        res, first, warm = M.first_and_best(fn)
        assert not bool(res.failed), res.report()
        points.append(
            dict(coords=k, num_evals=int(res.num_evals), first_call_seconds=first, warm_seconds=warm, status=res.status)
        )
        print("  sampled", points[-1])

    def at_n(field):  # the line through the two sampled checks, at k = n
        (k1, k2), (v1, v2) = CHUNKS, (points[0][field], points[1][field])
        return v1 + (v2 - v1) / (k2 - k1) * (n - k1)

    return dict(
        estimated=True,
        how=f"warm time and evaluations of sampled checks of k = {CHUNKS[0]} and {CHUNKS[1]} coordinates, "
        "each fitted by a line a + b·k and evaluated at k = n",
        num_evals=int(round(at_n("num_evals"))),
        warm_seconds=at_n("warm_seconds"),
        sampled=points,
    )


def main():
    rows = []
    key = jax.random.key(0)
    with jax.enable_x64(True):
        for d in SIZES:
            problem = _ode.problem(d, jnp.float64, jax.random.key(d))
            n = d * d + d
            taylor = run_taylor(problem, key)
            print(f"n = {n:,}: taylor_test", taylor)
            full = run_full(problem, n) if n <= FULL_UP_TO else estimate_full(problem, n, key)
            print(f"n = {n:,}: check_grad", full)
            rows.append(
                dict(
                    n=n,
                    d=d,
                    taylor_test=taylor,
                    check_grad=full,
                    evals_ratio=full["num_evals"] / taylor["num_evals"],
                    warm_time_ratio=full["warm_seconds"] / taylor["warm_seconds"],
                )
            )
    table = M.markdown_table(
        [
            "n",
            "taylor_test evals",
            "taylor_test warm",
            "taylor_test first call",
            "check_grad evals",
            "check_grad warm",
            "ratio (time)",
        ],
        [
            [
                f"{r['n']:,}",
                r["taylor_test"]["num_evals"],
                f"{r['taylor_test']['warm_seconds']:.3f} s",
                f"{r['taylor_test']['first_call_seconds']:.2f} s",
                f"{r['check_grad']['num_evals']:,}" + (" (est.)" if r["check_grad"]["estimated"] else ""),
                f"{r['check_grad']['warm_seconds']:.2f} s" + (" (est.)" if r["check_grad"]["estimated"] else ""),
                f"{r['warm_time_ratio']:.0f}×",
            ]
            for r in rows
        ],
    )
    print(table)
    result = dict(
        command=M.command(),
        machine=M.machine(device=True),
        note="CPU timings on a shared 2-core machine (other work ran at the same time); float64; "
        "check_grad above n = 2,000 is estimated from timed sampled checks, not run.",
        rows=rows,
        table=table,
    )
    path = M.RESULTS / ("taylor_quick.json" if QUICK else "taylor.json")
    M.write_json(path, result)
    print("wrote", path)
    assert all(np.isfinite(r["warm_time_ratio"]) for r in rows)


if __name__ == "__main__":
    main()
