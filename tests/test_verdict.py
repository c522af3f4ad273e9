"""The verdict and the rounding level on their own (properties), and results of one check that stack."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import jgc
from jgc import _noise, _verdict
from jgc._measure import Measured


def _measured(D, A, b, kink=None, known=None):
    z = np.zeros(D.shape, bool)
    return Measured(
        D, A, b, z if kink is None else kink, ~z if known is None else known, np.ones(D.shape), z, np.zeros(D.shape), z
    )


@st.composite
def entries(draw):
    k = draw(st.integers(1, 4))
    counts = [draw(st.integers(1, 6)) for _ in range(k)]
    e = sum(counts)
    floats = st.floats(-10, 10, allow_nan=False, width=64)
    D = np.array(draw(st.lists(floats, min_size=e, max_size=e)))
    A = D + np.array(draw(st.lists(st.floats(-1, 1, width=64), min_size=e, max_size=e))) * draw(
        st.sampled_from([0, 1e-9, 1e-4, 1e-1])
    )
    b = np.abs(np.array(draw(st.lists(st.floats(0, 1e-3, width=64), min_size=e, max_size=e))))
    seg = np.repeat(np.arange(k, dtype=np.int32), counts)
    return D, A, b, seg, k, tuple(counts)


@settings(max_examples=60, deadline=None)
@given(entries(), st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2]))
def test_decide_properties(case, tol):
    D, A, b, seg, k, sizes = case
    m = _measured(D, A, b)
    dec = _verdict.decide(np, m, seg, k, sizes, tol, False, True)
    g = dec.groups
    # what is proven never exceeds the classic relative error, which never exceeds what is possible
    assert np.all(g.lower <= g.rel_error * (1 + 1e-12) + 1e-300)
    assert np.all(g.rel_error <= g.upper * (1 + 1e-12) + 1e-300)
    assert not np.any(g.passed & g.failed) and not (dec.passed and dec.failed)
    # a failure is a proven error beyond tol; a pass has its largest possible error within tol, of its
    # own scale or (a leaf whose gradient is ~0) of the whole gradient's per-coordinate scale
    assert np.all(g.lower[g.failed] > tol)
    rms = (np.linalg.norm(D) + np.linalg.norm(A)) / np.sqrt(len(D))
    possible = np.sqrt(np.bincount(seg, weights=(np.abs(D - A) + b) ** 2, minlength=k))
    small = possible <= tol * rms * np.sqrt(np.bincount(seg, minlength=k)) * (1 + 1e-12)
    assert np.all((g.upper <= tol) | small | ~g.passed)
    # monotone in tol: a larger tol passes at least as much and fails at most as much
    wider = _verdict.decide(np, m, seg, k, sizes, 10 * tol, False, True).groups
    assert np.all(wider.passed >= g.passed) and np.all(wider.failed <= g.failed)


def test_decide_a_proven_error_below_tol_is_not_a_failure():
    D = np.array([1.0, 2.0, 3.0])
    m = _measured(D, D * (1 + 1e-7), np.full(3, 1e-12))
    dec = _verdict.decide(np, m, np.zeros(3, np.int32), 1, (3,), 1e-6, True, True)
    assert dec.groups.lower[0] > 0 and not dec.failed and dec.passed


def test_decide_a_small_leaf_fails_on_its_own_scale():
    # leaf 1's gradient is 1e-3 of the others (a bias next to weights): a proven 1% error there
    # fails, whatever the whole gradient's scale; 1e-8 of its own values passes
    D = np.array([1.0, -2.0, 1.5, 1e-3, -2e-3])
    seg = np.array([0, 0, 0, 1, 1], np.int32)
    for rel, fails in ((1e-2, True), (1e-8, False)):
        A = D * np.array([1, 1, 1, 1 + rel, 1 + rel])
        dec = _verdict.decide(np, _measured(D, A, np.full(5, 1e-12)), seg, 2, (3, 2), 1e-4, False, True)
        assert bool(dec.groups.failed[1]) == fails and bool(dec.failed) == fails
        assert bool(dec.groups.passed[1]) == (not fails)


def test_decide_a_negligible_leaf_passes_against_the_whole_gradient_once_final():
    # leaf 1's true gradient is ~0: its analytic value (1e-12) is within its bound (2e-11, the
    # loss's rounding over the step), so nothing is proven; it cannot be resolved on its own scale
    # and passes against the whole gradient's scale once nothing more precise can be tried.
    # A real error there (1e-3, beyond the bound) fails.
    D = np.array([1.0, -2.0, 1.5, 1e-14])
    seg = np.array([0, 0, 0, 1], np.int32)
    b = np.array([1e-16, 1e-16, 1e-16, 2e-11])
    for err, final, outcome in ((1e-12, True, "passed"), (1e-12, False, "open"), (1e-3, True, "failed")):
        A = D + np.array([0, 0, 0, err])
        g = _verdict.decide(np, _measured(D, A, b), seg, 2, (3, 1), 1e-6, final, True).groups
        got = "failed" if g.failed[1] else "passed" if g.passed[1] else "open"
        assert got == outcome, (err, final)


# the central layout of the noise table: bases 1..4 × offsets (1, −1), J(θ) apart
_T = np.outer([1, 2, 3, 4], [1, -1]).reshape(-1)


def _level(f, noise, delta=1e-3):
    """The estimate from f at t·δ (t = ±1..±4, and 0) plus the given noise per t."""
    table = np.array([f(t * delta) + noise[t + 4] for t in _T]).reshape(4, 2)
    return _noise.level(np, table, _T, f(0.0) + noise[4])


def test_rounding_level_estimates_the_noise_and_ignores_a_kink_at_theta():
    rng = np.random.default_rng(0)
    sigma = 1e-9
    for f in (np.sin, lambda t: 3 * abs(t) + t):  # smooth; a kink at θ itself (a ReLU at 0)
        ests = np.array([float(_level(f, rng.normal(0, sigma, 9))[0]) for _ in range(40)])
        assert 0.25 * sigma < np.median(ests) < 2 * sigma, np.median(ests)
        assert np.max(ests) < 5 * sigma  # the kink does not read as noise


def test_rounding_level_counts_a_staircase_as_ties():
    _, ties, _ = _level(lambda t: np.round(t * 10) / 10, np.zeros(9))  # a staircase coarser than the table
    assert ties >= _noise.TIES


def test_results_at_three_points_stack():
    """A float32 check at three points, of which only one needs its float64 re-check: the results stack
    with np.stack (what a check at init and after training gives), and the stack reports."""

    def loss(p, x):
        return jnp.sum(jnp.tanh(p["w"] * x)) + 0.5 * jnp.sum(p["b"] ** 2)

    def grad(p, x):
        return {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2), "b": p["b"]}

    x = jnp.linspace(0.5, 2.0, 6)
    points = [{"w": jnp.full(6, s, jnp.float32), "b": jnp.array([0.0, s], jnp.float32)} for s in (0.0, 0.3, 3.0)]
    results = [jgc.check_grad(loss, grad, p, x) for p in points]
    rechecked = [int(r.run.recheck) == 1 for r in results]
    assert any(rechecked) and not all(rechecked), rechecked
    stacked = jax.tree.map(lambda *a: np.stack(a), *results)
    assert stacked.passed.shape == (3,) and bool(stacked.passed.all())
    np.testing.assert_array_equal(stacked.run.recheck, [r.run.recheck for r in results])
    assert "all passed" in stacked.report()
