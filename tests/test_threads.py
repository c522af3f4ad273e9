"""Concurrent checks: the program cache is shared and locked, everything else is per call, and a
check run in a thread pool gives the result it gives alone, bit for bit."""

import concurrent.futures
import gc
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc
from jgc import _jit

THREADS = 8
KEY = jax.random.key(3)


@pytest.fixture(autouse=True)
def x64():
    """float64 checks (cheap: nothing to re-check in float64). Set globally, not with the
    thread-local `jax.enable_x64` context, so that the pool's threads see it too."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _model(i):
    """Check i of a sweep: its own loss (a new function, so a new program) and a gradient that is
    right for even i and wrong (the bias term's factor) for odd i."""
    c = 1.0 + 0.25 * i

    def loss(p, x):
        return jnp.sum(jnp.tanh(c * p["w"] * x)) + jnp.sum(p["b"] ** 2)

    def grad(p, x):
        t = jnp.tanh(c * p["w"] * x)
        return {"w": c * x * (1 - t**2), "b": (2.0 if i % 2 == 0 else 2.5) * p["b"]}

    return loss, grad


P = {"w": np.array([0.3, -1.2, 0.7]), "b": np.array([0.5, 2.0])}
X = np.array([0.5, -1.0, 2.0])


def _check(i, model):
    """One check of the sweep (the kind rotates: full, sampled, directions) and the fields compared."""
    loss, grad = model
    kind = i % 3
    if kind == 0:
        res = jgc.check_grad(loss, grad, P, X)
    elif kind == 1:
        res = jgc.check_grad(loss, grad, P, X, coords=3, key=KEY)
    else:
        res = jgc.check_directions(loss, grad, P, X, key=KEY, num=2)
    return _fields(res)


def _fields(res):
    fields = (res.passed, res.failed, res.rel_error, res.num_evals, res.numeric_flat, res.analytic_flat, res.noise)
    leaves = jax.tree_util.tree_leaves(fields)
    return res.status, [np.asarray(x) for x in leaves]


def _assert_same(a, b):
    assert a[0] == b[0]
    assert len(a[1]) == len(b[1])
    for x, y in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(x, y)  # bit for bit (NaN equal to NaN)


def _pool(fn, items):
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(fn, items))


def test_program_cache_under_contention():
    # entries whose functions die while other threads look up (the KeyError in _drop_dead)
    programs = _jit.Programs(size=8)
    errors = []

    def work(t):
        try:
            for i in range(1500):
                f = lambda x, i=i: x + i  # noqa: E731
                assert programs.get(("k", t, _jit.Ref(f)), lambda: object()) is not None
                del f
        except Exception as e:  # noqa: BLE001 -- collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    gc.collect()
    assert len(programs) == 0


def test_one_key_built_once_under_contention():
    programs = _jit.Programs()
    ref = _jit.Ref(_model)
    barrier = threading.Barrier(THREADS)

    def get(_):
        barrier.wait()
        return programs.get(("same", ref), lambda: object())

    assert len({id(p) for p in _pool(get, range(THREADS))}) == 1


def test_distinct_checks_on_a_cold_cache_equal_serial():
    # a sweep in a thread pool: every check compiles its own programs at the same time; then the
    # same checks one after another (from the programs the pool compiled) give the same results
    models = [_model(i) for i in range(THREADS)]
    _jit.PROGRAMS.clear()
    gc.collect()
    concurrent_ = _pool(lambda i: _check(i, models[i]), range(THREADS))
    serial = [_check(i, models[i]) for i in range(THREADS)]
    assert [s[0] for s in serial[:3]] == ["passed", "failed", "passed"]
    for a, b in zip(serial, concurrent_, strict=True):
        _assert_same(a, b)


@pytest.mark.parametrize("kind", [0, 2])
def test_identical_checks_equal_serial(kind):
    loss, grad = _model(kind)

    def one(_):
        if kind == 0:
            return _fields(jgc.check_grad(loss, grad, P, X))
        return _fields(jgc.check_directions(loss, grad, P, X, key=KEY, num=2))

    _jit.PROGRAMS.clear()
    results = _pool(one, range(THREADS))  # cold: every thread asks for the same programs at once
    expected = one(None)
    for r in results:
        _assert_same(r, expected)


def _numpy_loss(p, x):
    return float(np.sum(np.tanh(p["w"] * x)) + np.sum(p["b"] ** 2))  # NumPy: runs on the host


def _numpy_grad(wrong):
    def grad(p, x):
        t = np.tanh(p["w"] * x)
        return {"w": x * (1 - t**2), "b": (2.5 if wrong else 2.0) * p["b"]}

    return grad


def test_one_numpy_loss_in_several_threads_equals_serial():
    # the host loss's cost is metered per check: checks of the same NumPy loss in a pool each
    # count their own evaluations (the note equals the serial one) and give the serial verdict
    def one(i):
        res = jgc.check_grad(_numpy_loss, _numpy_grad(i % 2 == 1), P, X)
        return res.status, int(res.num_evals), int(res.host_cost[1]), _fields(res)

    results = _pool(one, range(THREADS))
    serial = [one(i) for i in range(2)]
    assert [s[0] for s in serial] == ["passed", "failed"]
    for i, r in enumerate(results):
        assert r[:3] == serial[i % 2][:3]
        _assert_same(r[3], serial[i % 2][3])


def test_flags_set_in_one_thread_stay_in_it():
    # a check under jax.disable_jit() (thread-local) next to jitted checks in other threads
    loss, grad = _model(0)
    barrier = threading.Barrier(2)

    def eager(_):
        barrier.wait()
        with jax.disable_jit():
            return jgc.check_grad(loss, grad, P, X).status, jax.config.jax_disable_jit

    def jitted(_):
        barrier.wait()
        return jgc.check_grad(loss, grad, P, X).status, jax.config.jax_disable_jit

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(eager, 0), pool.submit(jitted, 0)
        assert a.result() == ("passed", True)
        assert b.result() == ("passed", False)
    assert not jax.config.jax_disable_jit
