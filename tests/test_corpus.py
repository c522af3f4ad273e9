"""The bug corpus (tests/corpus): its registry, tags and correct gradients, and jgc's verdicts on it.

float64: no false alarm over several seeds, every planted bug caught at its leaf.
float32: no false alarm (an inconclusive check is not one), every gross bug (relative
error ≥ 1e-2 on its leaf at that point) caught at its leaf.
Models added to judge verdict rules (`corpus.ADDED`) whose bugs today's rules miss are
marked xfail with the reason: the verdict rewrite must turn them into passes.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from corpus import ADDED, CATEGORIES, FLOAT64_ONLY, MODELS, NOT_COMPLEX_SAFE, bug_size, outcome, size_category, variants_at
from jax.flatten_util import ravel_pytree

import jgc

SEEDS = 2
ADDED_NAMES = {m.name for m in ADDED}

# Inside jit/vmap (these tests) the check takes float64's nominal step and cannot re-measure:
# where that step cannot resolve tol 1e-6, a correct model is inconclusive, never failed, and
# a bug never passes. On concrete inputs these are resolved (test_corpus_on_concrete_inputs,
# benchmarks/verdicts.py --host).
TRACED_UNRESOLVED_FLOAT64 = {
    "f32_inside_softmax": "float32 rounding inside the loss swamps the float64 step (eps=1e-6)",
    "large_offset": "u·|J|/h with |J| ~ 1e4 is ~2e-6 of the gradient at h = 1e-6: above tol 1e-6",
    "bce_log_eps": "1 - sigmoid(z) cancels at |z| ~ 15: rounding inside the loss reaches tol 1e-6",
}
# Known limitation: under a trace the step is fixed before the loss's rounding is measured, and
# the noise probe underestimates float32 rounding inside a float64 loss (the staircase of
# float32 values at float64 steps), so a correct model can fail. On concrete inputs the step
# follows the measured rounding and the check is firm.
MISSED_FLOAT64 = {"f32_inside_mlp": "float32 inside a float64 loss under jit: noise underestimated at the float64 step"}
# float32 inside jit/vmap resolves ~1e-2: the tests ask for no false alarm and every gross bug.
MISSED_FLOAT32 = {
    "rmsnorm": "the gain's gradient next to the 1/rms-amplified weights' (not measured since the verdict rewrite)",
    "poisson_nll": "u·|J|/h with |J| ~ 7e3 (not measured since the verdict rewrite)",
}


# The default run: one model of each failure class and a few realistic layers; every model
# runs in the slow tier (`pytest -m slow`), and benchmarks/verdicts*.py measure the whole corpus.
QUICK = {
    "small_bias_sum",
    "mlp_l2_lam1e-2",
    "large_offset",
    "large_input",
    "f32_inside_mlp",
    "layernorm_eps",
}


def _param(models, missed=None):
    missed = missed or {}
    return [
        pytest.param(
            m,
            id=m.name,
            marks=([pytest.mark.xfail(strict=False, reason=missed[m.name])] if m.name in missed else [])
            + ([] if m.name in QUICK else [pytest.mark.slow]),
        )
        for m in models
    ]


def _paths(params):
    return [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def test_registry_shape():
    names = {m.name for m in MODELS}
    assert len(MODELS) >= 35 and len(names) == len(MODELS)
    assert sum(len(m.bugs) for m in MODELS) >= 100
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
        # added: conditioning, realistic layers, subtle bugs
        "small_bias_sum",
        "mlp_l2_lam1e-3",
        "large_offset",
        "large_input",
        "f32_inside_mlp",
        "layernorm_eps",
        "rmsnorm",
        "conv1d_two_layers",
        "conv2d_lax_strided",
        "gru_bptt",
        "lstm_bptt",
        "mha_causal",
        "tied_embedding_lm",
        "residual_layerscale",
    ):
        assert family in names
    assert FLOAT64_ONLY <= names and NOT_COMPLEX_SAFE <= names and FLOAT64_ONLY <= NOT_COMPLEX_SAFE
    tags = [m.tags.get(b) for m in MODELS for b in m.bugs]
    assert set(tags) == set(CATEGORIES)
    assert tags.count("subtle") >= 10 and tags.count("moderate") >= 5
    with jax.enable_x64(True):
        for m in MODELS:
            params, args = jax.eval_shape(lambda k, m=m: m.init(k, jnp.float64), jax.random.key(0))  # shapes only
            for bug, (fn, leaf) in m.bugs.items():
                assert callable(fn) and leaf in _paths(params), (m.name, bug, leaf)


@pytest.mark.slow  # the corpus' own integrity: run when the corpus changes (pytest -m slow)
@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_correct_gradient_and_tags(m):
    """The hand-written gradient equals jax.grad in float64 (to float32 accuracy for losses that
    compute in float32 inside), and each bug's tag is its size measured at seed 0."""
    rtol = 1e-5 if m.name in FLOAT64_ONLY else 1e-9
    with jax.enable_x64(True):
        for seed in range(2):
            params, args = m.init(jax.random.key(seed), jnp.float64)
            for path, g, t in zip(
                _paths(params), jax.tree.leaves(m.grad_fn(params, *args)), jax.tree.leaves(jax.grad(m.loss_fn)(params, *args))
            ):
                np.testing.assert_allclose(g, t, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(t))), err_msg=f"{m.name} {path}")
    for bug in m.bugs:
        size = bug_size(m, bug, seed=0)
        assert m.tags.get(bug) == size_category(size), (m.name, bug, size)
        assert size > 1e-8, (m.name, bug, size)  # resolvable in float64 in principle


@pytest.mark.slow  # the corpus' own integrity: run when the corpus changes (pytest -m slow)
@pytest.mark.parametrize("m", MODELS, ids=[m.name for m in MODELS])
def test_complex_safety_as_listed(m):
    """Complex step (Im J(θ + i·h·e_j) / h, h = 1e-20) gives jax.grad exactly unless the model is in NOT_COMPLEX_SAFE."""
    with jax.enable_x64(True):
        params, args = m.init(jax.random.key(0), jnp.float64)
        theta, unravel = ravel_pytree(params)
        grad = ravel_pytree(jax.grad(m.loss_fn)(params, *args))[0]
        T = jnp.broadcast_to(theta, (theta.size, theta.size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # casting complex to real warns: not complex-safe
                values = jax.vmap(lambda t: m.loss_fn(unravel(t), *args))(T + 1j * 1e-20 * jnp.eye(theta.size))
            safe = jnp.iscomplexobj(values) and float(jnp.linalg.norm(jnp.imag(values) / 1e-20 - grad)) <= 1e-10 * float(
                jnp.linalg.norm(grad)
            )
        except (TypeError, ValueError, DeprecationWarning):
            safe = False
    assert safe == (m.name not in NOT_COMPLEX_SAFE)


def check_all(m, dtype, method="central", seeds=SEEDS):
    """Every variant (correct, then each bug) of model m over `seeds` seeds, in one compiled check."""
    b = variants_at([m], dtype, jax.random.split(jax.random.key(1), seeds))
    res = b.map(lambda p, i, a: jgc.check_grad(b.loss_fn, b.grad_fn, p, i, a, method=method))(b.params, b.variant, b.args)
    return res, b, outcome(b, res)


@pytest.mark.parametrize("m", _param(MODELS, MISSED_FLOAT64))
def test_corpus_float64(m):
    with jax.enable_x64(True):
        res, b, o = check_all(m, jnp.float64)
    assert np.asarray(res.deterministic).all()
    if m.name in TRACED_UNRESOLVED_FLOAT64:
        assert (o.passed[0] | o.inconclusive[0]).all(), f"false alarm on correct {m.name}:\n{res.report()}"
        for i in range(1, len(b.names)):
            assert not o.passed[i].any(), f"{m.name}/{b.names[i][1]} passed (sizes {o.size[i]})"
        return
    assert o.passed[0].all(), f"correct {m.name} not passed:\n{res.report()}"
    for i in range(1, len(b.names)):
        assert not o.passed[i].any(), f"{m.name}/{b.names[i][1]} not detected (sizes {o.size[i]})"
        assert o.localised[i].all(), f"{m.name}/{b.names[i][1]} not localised at {b.leaves[i]}"


@pytest.mark.parametrize("m", _param([m for m in MODELS if m.name in QUICK]))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_corpus_on_concrete_inputs(m, dtype):
    """What a user gets: check_grad called plainly, resolution included. Correct passes, every
    planted bug fails at its leaf (benchmarks/verdicts.py --host measures the whole corpus)."""
    if dtype == "float32" and m.name in FLOAT64_ONLY:
        pytest.skip("float64 only")
    with jax.enable_x64(dtype == "float64"):
        params, args = m.init(jax.random.key(0), jnp.dtype(dtype))
        res = jgc.check_grad(m.loss_fn, m.grad_fn, params, *args)
        assert res.status == "passed", res.report()
        tol = float(res.tol)
        for bug, (fn, leaf) in m.bugs.items():
            res = jgc.check_grad(m.loss_fn, fn, params, *args)
            size = _size_here(m, fn, leaf, params, args)  # the bug's relative error on its leaf, at this point
            if size < tol:  # within the tolerance: not a failure (the fail bar is tol)
                assert res.status != "failed", f"{m.name}/{bug} (size {size:.1e} < tol {tol:.0e}): {res.report()}"
                continue
            if size < 2 * tol:  # at the bar: either
                continue
            assert res.status == "failed", f"{m.name}/{bug}: {res.report()}"
            assert bool(jax.tree.leaves(res.leaf_failed)[res.layout.paths.index(leaf)]), f"{m.name}/{bug} not at {leaf}"


def _size_here(m, bad_fn, leaf, params, args):
    """The relative error of a bad gradient on its leaf at this point (float64, true gradient jax.grad)."""
    with jax.enable_x64(True):
        up = lambda t: jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, t)  # noqa: E731
        p64, a64 = up(params), up(args)
        true, bad = jax.grad(m.loss_fn)(p64, *a64), bad_fn(p64, *a64)

        def pick(tree):
            leaves = {jax.tree_util.keystr(k): x for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
            return np.ravel(np.asarray(leaves[leaf], np.float64))

        t, b = pick(true), pick(bad)
        return float(np.linalg.norm(b - t) / (np.linalg.norm(b) + np.linalg.norm(t)))


@pytest.mark.parametrize("m", _param([m for m in MODELS if m.name not in FLOAT64_ONLY], MISSED_FLOAT32))
def test_corpus_float32(m):
    """Only what must hold in float32: no false alarm, and every gross bug caught at its leaf."""
    res, b, o = check_all(m, jnp.float32)
    assert (o.passed[0] | o.inconclusive[0]).all(), f"false alarm on correct {m.name}:\n{res.report()}"
    for i in range(1, len(b.names)):
        gross = o.size[i] >= 1e-2
        assert not o.passed[i][gross].any(), f"{m.name}/{b.names[i][1]} (gross, sizes {o.size[i]}) not detected"
        assert o.localised[i][gross].all(), f"{m.name}/{b.names[i][1]} not localised at {b.leaves[i]}"


def test_outcome_reads_the_result():
    """corpus.outcome reads passed / leaf_passed / layout.paths, and `inconclusive` only when the result has it."""
    from types import SimpleNamespace

    from corpus import Batch

    b = Batch(
        None, None, [("m", "correct"), ("m", "bug")], [None, "['b']"], [0, 0], None, None, None, 2, None, np.full((2, 2, 2), 0.5)
    )
    layout = SimpleNamespace(paths=["['a']", "['b']"])
    passed = np.array([True, False, False, False])
    leaf_passed = {"a": np.array([True, True, True, True]), "b": np.array([True, False, True, False])}
    o = outcome(b, SimpleNamespace(passed=passed, leaf_passed=leaf_passed, layout=layout))
    assert not o.has_inconclusive and not o.inconclusive.any()
    np.testing.assert_array_equal(o.localised, [[False, False], [False, True]])
    np.testing.assert_array_equal(o.size, [[0, 0], [0.5, 0.5]])
    o = outcome(
        b,
        SimpleNamespace(passed=passed, leaf_passed=leaf_passed, layout=layout, inconclusive=np.array([False, True, False, True])),
    )
    assert o.has_inconclusive
    np.testing.assert_array_equal(o.inconclusive, [[False, True], [False, True]])
