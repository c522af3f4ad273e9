"""Strict JAX for every test, and the plain / jit / vmap transform fixture."""

import re

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


# The default run covers every dtype and every forced partial-evaluation path, each beyond
# plain in one dtype: the sparse path in float32 and the downstream-only path in float64; the
# `transform` fixture runs plain there, and checks under jit and vmap have tests of their own
# (test_check.py::test_vmap_matches_python_loop, test_seeds, test_false_alarms, test_verdict,
# the stencils, partial evaluation and the host paths under vmap). The other pairings are in
# the slow tier (`pytest -m slow`, `nox -s slow`), with the full corpus and the long
# random-model runs.
# A test marked `@pytest.mark.slow_transforms("jit", ...)` (a check that compiles large programs)
# has those transforms in the slow tier too.
_SLOW_PAIRS = {
    ("dtype", "transform"): {("float64", "vmap"), ("float32", "vmap"), ("float32", "jit"), ("float64", "jit")},
    ("dtype", "forced"): {("float32", "partial"), ("float64", "sparse")},
    ("dtype", "wrap"): {("float32", "jit")},
}


# Tests whose behaviour the default tier covers with a cheaper case (another dtype, model,
# stencil or path of the same test), run in the slow tier only: node ids, `*` matching anything.
# The default tier must stay within 5 minutes on 2 cores; measure with `pytest --durations=0`.
_SLOW_TESTS = (
    "jgc/_seeds.py::jgc._seeds.check_snapshots",
    "jgc/testing.py::jgc.testing.assert_grad_seeds",
    "tests/test_corpus.py::test_corpus_float32[*",
    "tests/test_corpus.py::test_corpus_float64[*",
    "tests/test_corpus.py::test_corpus_on_concrete_inputs[*",
    "tests/test_corpus_ops.py::test_ops_float32[gelu_tanh]",
    "tests/test_corpus_ops.py::test_ops_float32[sin]",
    "tests/test_corpus_ops.py::test_ops_float64[sin]",
    "tests/test_corpus_ops.py::test_ops_float64[cholesky]",
    "tests/test_devices.py::*",
    "tests/test_diagnose.py::test_hints[float64-plain]",
    "tests/test_dropout.py::test_dropout_example_verdicts[float32-plain]",
    "tests/test_dropout.py::test_example_main_runs",
    "tests/test_dropout.py::test_forgotten_scale_is_diagnosed",
    "tests/test_dropout.py::test_nondeterministic_loss_is_detected[jit]",
    "tests/test_dropout.py::test_nondeterministic_loss_is_detected[vmap]",
    "tests/test_false_alarms.py::test_alarms_points_are_what_they_claim",
    "tests/test_false_alarms.py::test_case1_relu_networks_not_failed[relu_mlp4-float32-jit]",
    "tests/test_false_alarms.py::test_case2_deterministic_loss_is_deterministic[batchnorm_spatial-seeds1]",
    "tests/test_false_alarms.py::test_case3_random_loss_fails_as_nondeterministic[rel1e-6-float32-check_directions]",
    "tests/test_false_alarms.py::test_case4_classic_net_directions_not_failed[float64]",
    "tests/test_false_alarms.py::test_case4_classic_net_no_kinks_and_not_failed[float32]",
    "tests/test_false_alarms.py::test_case8_locate_finds_one_wrong_coordinate_or_says_incomplete[20000-*",
    "tests/test_hvp.py::test_check_hvp_full[float32-plain-False]",
    "tests/test_hvp.py::test_check_hvp_random_vectors[float32-False]",
    "tests/test_hvp.py::test_check_hvp_random_vectors[float32-True]",
    "tests/test_hvp.py::test_check_hvp_random_vectors[float64-False]",
    "tests/test_hvp.py::test_check_hvp_random_vectors[float64-True]",
    "tests/test_hvp.py::test_hvp_with_grad_fn_and_report",
    "tests/test_kinks.py::test_relu_at_zero_no_false_alarm_wrong_gradient_caught[float64-plain]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[partial-dropout_mlp]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[partial-large_input]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[partial-layernorm_eps]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[partial-mlp_l2_lam1e-2]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[partial-small_bias_sum]",
    "tests/test_partial.py::test_bug_corpus_same_numbers[sparse-*",
    "tests/test_partial.py::test_conv_takes_the_sparse_path[float32]",
    "tests/test_partial.py::test_conv_takes_the_sparse_path[float64]",
    "tests/test_partial.py::test_default_and_plan",
    "tests/test_partial.py::test_explicit_eps_and_chunk[partial]",
    "tests/test_partial.py::test_explicit_eps_and_chunk[sparse]",
    "tests/test_partial.py::test_mixed_dtypes_and_unchecked_leaves[partial]",
    "tests/test_partial.py::test_mixed_dtypes_and_unchecked_leaves[sparse]",
    "tests/test_partial.py::test_models_same_numbers[*",
    "tests/test_partial.py::test_new_data_with_the_same_loss_is_not_served_stale[partial]",
    "tests/test_partial.py::test_other_stencils[float32-sparse-five_point]",
    "tests/test_partial.py::test_other_stencils[float64-partial-five_point]",
    "tests/test_partial.py::test_other_stencils[float64-partial-forward]",
    "tests/test_partial.py::test_planted_bug_under_transforms[plain-float32-sparse]",
    "tests/test_partial.py::test_planted_bug_under_transforms[vmap-float32-sparse]",
    "tests/test_partial.py::test_random_pytrees",
    "tests/test_partial_random.py::test_course_network_column_biases[float32-None]",
    "tests/test_partial_random.py::test_course_network_column_biases[float32-partial]",
    "tests/test_partial_random.py::test_course_network_column_biases[float64-sparse]",
    "tests/test_partial_random.py::test_random_models",
    "tests/test_pipeline.py::test_executables_die_with_their_functions",
    "tests/test_plot.py::test_example_saves_png",
    "tests/test_plugin.py::test_assert_grad_seeds_passes_and_fails[float32]",
    "tests/test_plugin.py::test_assert_grad_seeds_passes_and_fails[float64]",
    "tests/test_plugin.py::test_assert_helpers_for_rules",
    "tests/test_plugin.py::test_plugin_default_seeds_and_marker_registered",
    "tests/test_report.py::test_many_leaves_stay_readable",
    "tests/test_resolve.py::test_adapted_steps_resolve_a_step_too_large",
    "tests/test_seeds.py::test_seeds_pass_and_fail[float32-plain]",
    "tests/test_seeds.py::test_seeds_pass_and_fail[float64-plain]",
    "tests/test_seeds.py::test_seeds_with_other_checks",
    "tests/test_seeds.py::test_snapshots_match_single_checks[float32]",
    "tests/test_seeds.py::test_snapshots_match_single_checks[float64]",
    "tests/test_stencils.py::test_large_constant_in_float32_is_resolved_not_passed_blindly",
    "tests/test_stencils.py::test_methods_pass_and_catch[float32-central]",
    "tests/test_stencils.py::test_methods_pass_and_catch[float32-five_point]",
    "tests/test_stencils.py::test_methods_pass_and_catch[float32-forward]",
    "tests/test_stencils.py::test_methods_pass_and_catch[float64-complex_step]",
    "tests/test_stencils.py::test_methods_pass_and_catch[float64-five_point]",
    "tests/test_stencils.py::test_methods_pass_and_catch[float64-forward]",
    "tests/test_stencils.py::test_methods_under_transforms[jit-central]",
    "tests/test_stencils.py::test_methods_under_transforms[jit-complex_step]",
    "tests/test_stencils.py::test_methods_under_transforms[vmap-central]",
)
_SLOW_ID = re.compile("|".join(".*".join(map(re.escape, g.split("*"))) for g in _SLOW_TESTS))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SLOW_ID.fullmatch(item.nodeid):
            item.add_marker(pytest.mark.slow)
        params = getattr(getattr(item, "callspec", None), "params", {})
        for (a, b), slow in _SLOW_PAIRS.items():
            if (params.get(a), params.get(b)) in slow:
                item.add_marker(pytest.mark.slow)
        marker = item.get_closest_marker("slow_transforms")
        if marker is not None and params.get("transform") in marker.args:
            item.add_marker(pytest.mark.slow)
