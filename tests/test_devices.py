"""Several devices: probes spread over 4 simulated CPU devices give the one-device results.

XLA flags must be set before JAX initialises, so each configuration runs in a subprocess.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import jgc
from jgc import _engine

def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"] + p["b"][None]) ** 2)

def grad(p, x):
    t = jnp.tanh(x @ p["W"] + p["b"][None])
    d = 2 * t * (1 - t ** 2)
    return {"W": x.T @ d, "b": 1.5 * d.sum(0)}  # b is wrong

with jax.enable_x64(True):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    p = {"W": 0.5 * jax.random.normal(k1, (6, 5)), "b": 0.1 * jax.random.normal(k2, (5,))}
    x = jax.random.normal(k3, (7, 6))
    key = jax.random.key(1)
    out = {"devices": jax.device_count()}
    full = jgc.check_grad(loss, grad, p, x)
    out["full"] = [float(full.rel_error)] + np.asarray(full.numeric["W"]).ravel().tolist()
    # params committed to one device (as after jax.device_put(p, device)) still work
    committed = jgc.check_grad(loss, grad, jax.device_put(p, jax.devices()[-1]), x)
    out["committed"] = [float(committed.rel_error)] + np.asarray(committed.numeric["W"]).ravel().tolist()
    d = jgc.check_directions(loss, grad, p, x, key=key)
    out["directions"] = [float(d.rel_error)] + np.asarray(d.numeric["W"]).tolist() + np.asarray(d.numeric["b"]).tolist()
    s = jgc.check_grad(loss, grad, p, x, coords=9, key=key)
    out["sampled"] = [float(s.rel_error)] + np.nan_to_num(np.asarray(s.numeric["W"]), nan=-1.0).ravel().tolist()
    init = lambda k: {"W": 0.5 * jax.random.normal(k, (6, 5)), "b": jnp.ones(5)}
    seeds = jgc.check_seeds(loss, grad, init, jax.random.split(key, 5), x)
    out["seeds"] = np.asarray(seeds.rel_error).tolist() + np.asarray(seeds.numeric["b"]).ravel().tolist()
    out["seeds_passed"] = np.asarray(seeds.passed).tolist() + np.asarray(seeds.leaf_passed["b"]).tolist()
    found = jgc.locate(loss, grad, p, x, key=key)
    out["locate"] = [[c.path, list(c.index), c.numeric, c.analytic] for c in found.wrong] + [found.num_evals]
    # the engine really lays the probes out over the mesh
    mesh = _engine.mesh()
    out["mesh"] = 0 if mesh is None else mesh.size
print("RESULT" + json.dumps(out))
"""


def run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def results():
    return run(1), run(4)


def test_four_devices_are_used(results):
    one, four = results
    assert (one["devices"], one["mesh"]) == (1, 0)
    assert (four["devices"], four["mesh"]) == (4, 4)


@pytest.mark.parametrize("mode", ["full", "committed", "directions", "sampled"])
def test_same_results_as_one_device(results, mode):
    # Each device evaluates its probes as a batch of another shape than one device does, and
    # XLA's CPU kernels may round the loss differently by an ulp; finite differences amplify
    # that to ~ulp·|J|/eps ≈ 2e-9 here (float64), hence atol 1e-8 rather than bit equality.
    one, four = results
    np.testing.assert_allclose(four[mode], one[mode], rtol=1e-8, atol=1e-8)


def test_locate_same_coordinates_as_one_device(results):
    one, four = results
    assert [c[:2] for c in four["locate"][:-1]] == [c[:2] for c in one["locate"][:-1]]
    # evaluations spent: the same, but for the determinism check's repeated first chunk, whose size is a
    # multiple of the number of devices (at most 3 probes × 2 evaluations more on 4 devices)
    assert 0 <= four["locate"][-1] - one["locate"][-1] <= 3 * 2
    np.testing.assert_allclose([c[2:] for c in four["locate"][:-1]], [c[2:] for c in one["locate"][:-1]], rtol=1e-8, atol=1e-8)


def test_seeds_same_verdicts_as_one_device(results):
    # Under vmap each device evaluates its probes of all seeds as one batch of another shape
    # than one device does, and XLA's CPU matmuls may then round the loss differently by an
    # ulp; finite differences amplify that by 1/eps = 1e6 (float64), hence rtol and atol 1e-8.
    one, four = results
    np.testing.assert_allclose(four["seeds"], one["seeds"], rtol=1e-8, atol=1e-8)
    assert four["seeds_passed"] == one["seeds_passed"]


def test_planted_bug_found_on_four_devices(results):
    _, four = results
    assert four["full"][0] > 1e-3 and four["directions"][0] > 1e-3  # tol is 1e-6
    paths = {c[0] for c in four["locate"][:-1]}
    assert paths == {"['b']"} and len(four["locate"]) - 1 == 5
