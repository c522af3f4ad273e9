"""Strict JAX for every test, and the plain / jit / vmap transform fixture."""

import jax
import jax.numpy as jnp
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run the test in float32 and in float64 (x64 enabled only inside the test)."""
    if request.param == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32


@pytest.fixture(params=["plain", "jit", "vmap"])
def transform(request):
    """Apply a check plainly, under jax.jit, or under jax.vmap over a batch of 2 params.

    `transform(check, params_batch)` calls `check(params)`; for "plain" and "jit" it
    uses the first params of the batch and adds a batch axis of 1 to the result, so a
    test can treat all three the same way.
    """

    def apply(check, params_batch):
        first = jax.tree_util.tree_map(lambda x: x[0], params_batch)
        if request.param == "plain":
            res = check(first)
        elif request.param == "jit":
            res = jax.jit(check)(first)
        else:
            return jax.vmap(check)(params_batch)
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], res)

    apply.name = request.param
    return apply


# The default run covers every dtype, every transform and every forced partial-evaluation
# path, each beyond plain in one dtype: float32 under vmap (jit in the slow tier), the sparse
# path in float32 and the downstream-only path in float64. The other pairings are in the slow
# tier (`pytest -m slow`, `nox -s slow`), with the full corpus and the long random-model runs.
# A test marked `@pytest.mark.slow_transforms("jit", ...)` (a check that compiles large programs)
# has those transforms in the slow tier too.
_SLOW_PAIRS = {
    ("dtype", "transform"): {("float64", "vmap"), ("float32", "jit"), ("float64", "jit")},
    ("dtype", "forced"): {("float32", "partial"), ("float64", "sparse")},
    ("dtype", "wrap"): {("float32", "jit")},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for (a, b), slow in _SLOW_PAIRS.items():
            if (params.get(a), params.get(b)) in slow:
                item.add_marker(pytest.mark.slow)
        marker = item.get_closest_marker("slow_transforms")
        if marker is not None and params.get("transform") in marker.args:
            item.add_marker(pytest.mark.slow)
