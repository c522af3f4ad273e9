"""pytest plugin (entry point `pytest11: jgc`): the `gradcheck` fixture and marker.

Inert unless a test asks for the `gradcheck` fixture: it adds one option, one marker
and one fixture, and no hooks that touch other tests.

    def test_mlp_gradient(gradcheck):
        gradcheck.grad(loss_fn, grad_fn, init_fn, x, y)  # N seeds, report on failure

    @pytest.mark.gradcheck(seeds=16, tol=1e-7)
    def test_mlp_gradient_harder(gradcheck): ...

The number of seeds comes from the marker's `seeds=`, else `--jgc-seeds` (default 4);
the marker's other keywords are passed to every check of the test.
"""

from __future__ import annotations

import pytest

DEFAULT_SEEDS = 4


def pytest_addoption(parser):
    group = parser.getgroup("jgc", "jgc gradient checks")
    group.addoption(
        "--jgc-seeds",
        type=int,
        default=None,
        help=f"seeds per check for tests that use the gradcheck fixture (default {DEFAULT_SEEDS}).",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "gradcheck(seeds=N, **options): options for the jgc `gradcheck` fixture (seeds; check keywords: tol, eps, method).",
    )


class GradChecker:
    """What the `gradcheck` fixture returns: checks that raise `jgc.GradCheckError` with the report."""

    def __init__(self, seeds: int, options: dict):
        self.seeds = seeds
        self.options = options

    def grad(self, loss_fn, grad_fn, init_fn, *args, **kwargs):
        """`jgc.testing.assert_grad_seeds` over `self.seeds` initialisations `init_fn(key)`."""
        __tracebackhide__ = True
        from .testing import assert_grad_seeds

        return assert_grad_seeds(loss_fn, grad_fn, init_fn, self.seeds, *args, **{**self.options, **kwargs})

    __call__ = grad

    def vjp(self, f, vjp_fn, *primals, **kwargs):
        """`jgc.check_vjp` over `self.seeds` random cotangents."""
        __tracebackhide__ = True
        from .testing import assert_vjp

        return assert_vjp(f, vjp_fn, *primals, n_seeds=self.seeds, **{**self.options, **kwargs})

    def jvp(self, f, jvp_fn, *primals, **kwargs):
        """`jgc.check_jvp` over `self.seeds` sets of random tangents."""
        __tracebackhide__ = True
        from .testing import assert_jvp

        return assert_jvp(f, jvp_fn, *primals, n_seeds=self.seeds, **{**self.options, **kwargs})

    def hvp(self, loss_fn, hvp_fn, params, *args, **kwargs):
        """`jgc.check_hvp` (every coordinate unless a `key` is given)."""
        __tracebackhide__ = True
        from .testing import assert_hvp

        return assert_hvp(loss_fn, hvp_fn, params, *args, **{**self.options, **kwargs})


@pytest.fixture
def gradcheck(request) -> GradChecker:
    """Run jgc checks over several seeds; a failure shows the jgc report."""
    marker = request.node.get_closest_marker("gradcheck")
    options = dict(marker.kwargs) if marker else {}
    seeds = options.pop("seeds", None) or request.config.getoption("jgc_seeds") or DEFAULT_SEEDS
    return GradChecker(int(seeds), options)
