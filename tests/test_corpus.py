"""The bug corpus in float64: no false alarm over several seeds, every planted bug caught at its leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from corpus import MODELS, all_variants

import jgc

SEEDS = 3


def test_registry_shape():
    names = {m.name for m in MODELS}
    assert len(MODELS) >= 10 and len(names) == len(MODELS)
    assert sum(len(m.bugs) for m in MODELS) >= 25
    for family in (
        "mlp_l2",
        "dropout_mlp",
        "softmax_ce",
        "conv2d",
        "rnn_bptt",
        "layernorm",
        "batchnorm",
        "attention",
        "embedding",
    ):
        assert family in names
    with jax.enable_x64(True):
        for m in MODELS:
            params, args = m.init(jax.random.key(0), jnp.float64)
            paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
            for bug, (fn, leaf) in m.bugs.items():
                assert callable(fn) and leaf in paths, (m.name, bug, leaf)


def check_all(m, dtype, method="central", seeds=SEEDS):
    """Every variant (correct, then each bug) of model m over `seeds` seeds, in one compiled check."""
    loss, grad, names, leaves = all_variants(m)
    v = len(names)
    params, args = jax.vmap(lambda k: m.init(k, dtype))(jax.random.split(jax.random.key(1), seeds))
    params, args = jax.tree.map(lambda x: jnp.tile(x, (v,) + (1,) * (x.ndim - 1)), (params, args))
    variant = jnp.repeat(jnp.arange(v, dtype=jnp.int32), seeds)
    res = jax.vmap(lambda p, i, a: jgc.check_grad(loss, grad, p, i, *a, method=method))(params, variant, args)
    passed = np.asarray(res.passed).reshape(v, seeds)
    leaf_passed = [np.asarray(x).reshape(v, seeds) for x in jax.tree.leaves(res.leaf_passed)]
    return res, names, leaves, passed, leaf_passed


@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_corpus_float64(m):
    with jax.enable_x64(True):
        res, names, leaves, passed, leaf_passed = check_all(m, jnp.float64)
    assert passed[0].all(), f"false alarm on correct {m.name}:\n{res.report()}"
    assert np.asarray(res.deterministic).all()
    for i in range(1, len(names)):
        wrong = res.layout.paths.index(leaves[i])
        assert not passed[i].any(), f"{m.name}/{names[i]} not detected"
        assert not leaf_passed[wrong][i].any(), f"{m.name}/{names[i]} not localised at {leaves[i]}"
