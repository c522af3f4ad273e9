"""The one engine: a function of θ evaluated along a probe set, chunk by chunk.

A *function* here is `fun(θ, data) -> scalar or vector` (the loss of θ, or the output of
a layer, or a gradient). For probe i the probe set gives a direction d_i and a step h_i
(`jgc/_probes.py`); the engine returns fun(θ + o·h_i·d_i, data) for every offset o of an
offsets array, plus h_i and ⟨v, d_i⟩ for a vector v (the analytic side of a gradient check).
It knows nothing about which check it serves.

One compiled *chunk program* per function does every evaluation a check needs: the noise
probe, J(θ) (a null probe), the stencil at h, the stencil at 2h where it can change a
verdict, better steps for what is unresolved. Its shapes are fixed (`chunk` probes, `m`
offsets), so it compiles once: on concrete inputs the host loops over chunks (the result
stays on the device until the end; progress can be shown), under a trace the same chunk
function runs in `lax.map`.

Batching: `vmap` evaluates a chunk's chunk·m points as one batch; `map` evaluates them one
after another in a compiled loop (for losses whose batched form is slow, e.g. convolutions
on CPU, where vmap over perturbed kernels becomes a grouped convolution).

Memory is O(chunk · m · n): the default chunk keeps the perturbed copies of θ under
`CHUNK_ELEMENTS` elements. With several devices, each chunk's probes are spread over
them along one mesh axis; every probe is computed by the same code on one device.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _jaxpr, _jit, _noise, _partial, _probes
from ._typing import Tracer

# Memory budget for one chunk of perturbed parameter vectors, in array elements.
CHUNK_ELEMENTS = 2**23
MAX_CHUNK = 256

VMAP = "vmap"
MAP = "map"

# Progress is shown for host runs predicted to take longer than this (seconds) on a terminal;
# a run predicted to take longer than LONG says so once and names the cheaper checks.
PROGRESS_AFTER = 5.0
LONG = 60.0

_LONG_MSG = (
    "jgc: this check will take about {minutes:.0f} min ({probes:,} probes). For a verdict in far fewer loss "
    "evaluations: jgc.check_directions(..., key=key) (a few directions per leaf), check_grad(..., coords=k, key=key) "
    "(k sampled coordinates), then jgc.locate(..., key=key) to find the wrong entries.\n"
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static shape of the chunk program."""

    kind: str  # probe kind (_probes.COORDS or BLOCKS)
    m: int  # offsets per probe
    chunk: int  # probes per call
    batching: str = VMAP
    complex: bool = False  # offsets are imaginary (complex step): θ is perturbed along i·d


def chunk_size(n: int, num_probes: int, m: int, devices: int = 1) -> int:
    """Probes per chunk: perturbed copies under CHUNK_ELEMENTS, at most MAX_CHUNK, no more than
    needed for `num_probes` in equal chunks, and a multiple of the number of devices."""
    limit = max(1, min(MAX_CHUNK, CHUNK_ELEMENTS // max(1, n * m)))
    num_chunks = -(-max(1, num_probes) // limit)
    chunk = -(-max(1, num_probes) // num_chunks)
    return -(-chunk // devices) * devices


def mesh() -> Mesh | None:
    """A Mesh over all devices along the probe axis, or None on a single device."""
    devices = jax.devices()
    return Mesh(np.asarray(devices), ("probes",)) if len(devices) > 1 else None


# ---------------------------------------------------------------- host ⇄ device
#
# What a check moves, on concrete inputs: θ and the host-side (NumPy) arrays of params and
# args to the device once per check; per chunk call, the chunk's probes (a few int32/float
# arrays of `chunk` entries); the stencil's offsets and the analytic vector to project once
# per runner; the values, steps and projections back to the host. Every one of these is an
# explicit transfer (`jax.device_put` / `jax.device_get`), so `jax_transfer_guard="disallow"`
# (which forbids implicit transfers only) lets a check run, and "log" shows none of them;
# nothing is moved implicitly by a jit call with NumPy arguments or an eager op.


TRANSFER_FORBIDDEN = (
    "jax_transfer_guard forbids a transfer that a gradient check on concrete inputs must make ({what}). "
    "jgc moves, explicitly (jax.device_put / jax.device_get): θ (the checked parameters) and the "
    "host-side (NumPy) arrays of params and args to the device once per check, each chunk's probes "
    "(indices and steps), and the numeric values back to the host; nothing implicitly. "
    "The guard is {setting}: 'disallow' and 'log' allow explicit transfers, 'disallow_explicit' does not. "
    "Run the check under `with jax.transfer_guard('disallow'):` (or 'allow'), or call it inside "
    "jax.jit on device arrays (one program: nothing moves but what you fetch). JAX said: {error}"
)


def _guard_setting() -> str:
    names = ("jax_transfer_guard", "jax_transfer_guard_host_to_device", "jax_transfer_guard_device_to_host")
    values = [f"{n}={getattr(jax.config, n, None)!r}" for n in names if getattr(jax.config, n, None) is not None]
    return ", ".join(values) or "set"


def explicit(move, x, what: str):
    """`move(x)`, a function that transfers explicitly, with a transfer guard's refusal said plainly."""
    return _transfer(move, x, what)


def _transfer(move, x, what: str):
    try:
        return move(x)
    except jax.errors.JaxRuntimeError as e:
        if "Disallowed" not in str(e):
            raise
        error = str(e).splitlines()[0][:200]
        raise RuntimeError(TRANSFER_FORBIDDEN.format(what=what, setting=_guard_setting(), error=error)) from None


def to_device(tree, what: str = "host arrays to the device"):
    """Host arrays (NumPy) of a pytree put on the default device, explicitly; the rest unchanged."""
    put = lambda x: _transfer(jax.device_put, x, what) if isinstance(x, (np.ndarray, np.generic)) else x  # noqa: E731
    return jax.tree_util.tree_map(put, tree)


def to_host(tree, what: str = "values back to the host"):
    """Device arrays of a pytree brought to the host (NumPy), explicitly; PRNG keys (no NumPy form) stay."""

    def get(x):
        if isinstance(x, jax.Array) and not isinstance(x, Tracer) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(_transfer(jax.device_get, x, what))
        return x

    return jax.tree_util.tree_map(get, tree)


def place(leaves: list) -> list:
    """The data of a check on the device, ready for its programs (host-side, before jit).

    NumPy arrays are put on the device once (not again at every call of a program). An array
    committed to some of the devices (e.g. `jax.device_put(x, jax.devices()[1])`) cannot meet
    the probe sharding over all devices in one jitted computation; such arrays are replicated
    over the mesh. Device arrays, tracers and None: unchanged.
    """
    leaves = to_device(leaves)
    m = mesh()
    if m is None:
        return leaves
    devices, replicated = set(m.devices.flat), NamedSharding(m, PartitionSpec())

    def fix(x):
        if isinstance(x, jax.Array) and not isinstance(x, Tracer) and x.committed and x.sharding.device_set != devices:
            return jax.device_put(x, replicated)
        return x

    return [fix(x) for x in leaves]


def chunk_function(fun, plan: Plan):
    """The chunk program's body: (θ, data, key, probes, offsets, project) → (values, h, proj).

    `probes` holds `plan.chunk` probes; values has shape (chunk, m[, out]).
    """

    def body(theta, data, key, probes, offsets, project):
        m = mesh()
        if m is not None:
            probes = jax.lax.with_sharding_constraint(probes, NamedSharding(m, PartitionSpec("probes")))
        idx = jnp.arange(plan.chunk)
        point_dtype = jnp.result_type(theta.dtype, jnp.complex64) if plan.complex else theta.dtype
        offsets = offsets.astype(point_dtype)

        def point(i, o):
            d, h = _probes.direction(probes, i, theta, key)
            return theta.astype(point_dtype) + (o * h.astype(point_dtype)) * d.astype(point_dtype)

        if plan.batching == VMAP:
            pts = jax.vmap(lambda i: jax.vmap(lambda o: point(i, o))(offsets))(idx)  # (chunk, m, n)
            flat = pts.reshape((plan.chunk * plan.m,) + theta.shape)
            values = jax.vmap(lambda p: fun(p, data))(flat)
        else:
            pairs = (jnp.repeat(idx, plan.m), jnp.tile(jnp.arange(plan.m), plan.chunk))
            values = jax.lax.map(lambda ij: fun(point(ij[0], offsets[ij[1]]), data), pairs)
        values = values.reshape((plan.chunk, plan.m) + values.shape[1:])
        h = jax.vmap(lambda i: _probes.direction(probes, i, theta, key)[1])(idx)
        proj = (
            jnp.zeros(plan.chunk, theta.dtype)
            if project is None
            else jax.vmap(lambda i: _probes.project(probes, i, project, theta, key))(idx)
        )
        out = (values, h, proj)
        if m is not None:
            out = jax.lax.with_sharding_constraint(out, NamedSharding(m, PartitionSpec()))
        return out

    return body


def entry_chunk_function(fun, plan: Plan, shape: tuple, dtype):
    """The chunk program's body for a leaf on the sparse path: `fun(multi-index, new value, data)`
    evaluates J with one entry of the leaf changed (θ is the leaf's flat values here)."""

    def body(theta, data, key, probes, offsets, project):
        probes = _probes.as_jax(probes)  # NumPy under jax.disable_jit()
        idx = jnp.arange(plan.chunk)
        offsets = offsets.astype(theta.dtype)

        def step(i):
            return _probes.coordinate_step(theta[probes.start[i]], jnp.asarray(probes.base[i], theta.dtype))

        def one(i, o):
            j = probes.start[i]
            multi = [c.astype(jnp.int32) for c in jnp.unravel_index(j, shape)]
            return fun(multi, (theta[j] + o * step(i)).astype(dtype), data)

        if plan.batching == VMAP:
            values = jax.vmap(lambda i: jax.vmap(lambda o: one(i, o))(offsets))(idx)
        else:
            pairs = (jnp.repeat(idx, plan.m), jnp.tile(jnp.arange(plan.m), plan.chunk))
            values = jax.lax.map(lambda ij: one(ij[0], offsets[ij[1]]), pairs).reshape(plan.chunk, plan.m)
        return values.astype(theta.dtype), jax.vmap(step)(idx), jnp.zeros(plan.chunk, theta.dtype)

    return body


def _ordered(jaxpr) -> bool:
    """Whether the function has an ordered effect (io_callback(..., ordered=True), an ordered
    jax.debug.print), which JAX cannot vmap but runs in a compiled loop, in order."""
    return any("Ordered" in type(e).__name__ for e in jaxpr.effects)


def batching(facts: _jaxpr.Facts, jaxpr=None) -> str:
    """How to batch a chunk: a compiled loop (MAP) for convolutions on CPU, where a vmap over
    perturbed kernels becomes a grouped convolution that XLA:CPU runs ~100× slower, and for
    functions with ordered effects (which cannot be vmapped); else VMAP."""
    if jaxpr is not None and _ordered(jaxpr):
        return MAP
    return MAP if jax.default_backend() == "cpu" and facts.conv else VMAP


class Runner:
    """Evaluates probe sets with one chunk program.

    Host mode (`program` is a compiled callable, inputs concrete): a Python loop over
    chunks; outputs are gathered once at the end. Traced mode (`program` is the plain
    chunk function): `lax.map` over the chunks, inside the caller's trace.
    """

    def __init__(
        self, program, plan: Plan, theta, data, key=None, project=None, traced: bool = False, label: str = "", repeat_probes=None
    ):
        self.program, self.plan, self.theta, self.data, self.key = program, plan, theta, data, key
        # the vector whose projections on the probes come back (None: zeros); on the device once
        self.project = project if traced else to_device(project)
        self.traced = traced
        self.label = label
        # how many probes of the repeated chunk are evaluated again (None: all of them; a host loss,
        # whose every evaluation is a Python call, repeats a few spread over the chunk, the rest null)
        self.repeat_probes = repeat_probes

    def run(self, probes: _probes.Probes, offsets, repeat=None):
        """(values (P, m[, out]), h (P,), proj (P,), spread, evals) for the P probes of `probes`.

        `repeat` (host: a bool per probe; traced: True): the chunk holding the first marked probe
        is evaluated a second time by the same program, and `spread` is the largest difference
        between the two evaluations (0 for a deterministic loss on CPU); else spread is 0.
        `evals`: the loss evaluations it took (padding not counted, the repeat counted).
        """
        num = len(probes)
        c = self.plan.chunk
        total = -(-num // c) * c
        odtype = np.result_type(np.dtype(self.theta.dtype), np.complex64) if self.plan.complex else np.dtype(self.theta.dtype)
        offsets = jnp.asarray(offsets, odtype) if self.traced else to_device(np.asarray(offsets, odtype))
        project = self.project
        evals = num * self.plan.m
        if self.traced:
            padded = _pad_traced(probes, total)
            rows = jax.tree_util.tree_map(lambda x: x.reshape((total // c, c) + x.shape[1:]), padded)
            if repeat:  # the first chunk once more, through a barrier so that XLA cannot merge the two
                again = jax.lax.optimization_barrier(jax.tree_util.tree_map(lambda x: x[:1], rows))
                rows = jax.tree_util.tree_map(lambda x, y: jnp.concatenate([x, y]), rows, again)
                evals += min(c, num) * self.plan.m  # its probes (padding is not counted)
            out = jax.lax.map(lambda p: self.program(self.theta, self.data, self.key, p, offsets, project), rows)
            spread = jnp.zeros((), jnp.real(out[0]).dtype)
            if repeat:
                spread = _noise.spread(jnp, out[0][0], out[0][-1])
                out = jax.tree_util.tree_map(lambda x: x[:-1], out)
            out = jax.tree_util.tree_map(lambda x: x.reshape((total,) + x.shape[2:])[:num], out)
            return (*out, spread, evals)
        padded = _probes.pad(probes, total)
        outs = []
        progress = _Progress(total // c, self) if total // c > 2 else None
        for s in range(0, total, c):
            chunk = to_device(jax.tree_util.tree_map(lambda x, s=s: np.asarray(x[s : s + c]), padded))
            outs.append(self.program(self.theta, self.data, self.key, chunk, offsets, project))
            if progress is not None:
                progress.step(outs[-1])
        if progress is not None:
            progress.done()
        outs = to_host(outs)
        values, h, proj = (np.concatenate([o[k] for o in outs])[:num] for k in range(3))
        spread = np.zeros((), np.real(values).dtype)
        marked = np.flatnonzero(np.asarray(repeat)) if repeat is not None and num else np.zeros(0, int)
        if marked.size:
            s = int(marked[0]) // c * c
            first = np.asarray(outs[s // c][0])
            sub = jax.tree_util.tree_map(lambda x: np.asarray(x[s : s + c]), padded)
            real = min(c, num - s)
            keep = np.arange(c) < real
            if self.repeat_probes is not None and self.repeat_probes < real:
                keep = np.zeros(c, bool)
                keep[np.linspace(0, real - 1, self.repeat_probes).astype(int)] = True
                sub = dataclasses.replace(sub, base=np.where(keep, sub.base, 0).astype(sub.base.dtype))  # the rest: θ
            again = to_host(self.program(self.theta, self.data, self.key, to_device(sub), offsets, project)[0])
            spread = _noise.spread(np, first[keep], np.asarray(again)[keep]).astype(spread.dtype)
            evals += int(keep.sum()) * self.plan.m  # its probes (padding and null probes are not counted)
        return values, h, proj, spread, evals


def _pad_traced(probes: _probes.Probes, total: int) -> _probes.Probes:
    extra = total - len(probes)
    if extra == 0:
        return probes

    def pad(x, fill=0):
        return jnp.concatenate([x, jnp.full((extra,) + x.shape[1:], fill, x.dtype)])

    out = jax.tree_util.tree_map(pad, probes)
    if probes.kind == _probes.BLOCKS:
        out = dataclasses.replace(out, length=pad(probes.length, 1))
    return out


class _Progress:
    """A progress line on stderr for long host runs (only on a terminal)."""

    def __init__(self, num_chunks: int, runner: Runner):
        self.num, self.runner, self.done_chunks = num_chunks, runner, 0
        self.enabled = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.shown = self.warned = False

    def step(self, out):
        self.done_chunks += 1
        if not self.enabled:
            return
        if self.done_chunks in (2, 4) or self.done_chunks % 16 == 0:
            jax.block_until_ready(out)
            elapsed = time.perf_counter() - self.t0
            rate = elapsed / self.done_chunks
            remaining = rate * (self.num - self.done_chunks)
            if not self.warned and self.done_chunks >= 2 and elapsed + remaining > LONG:
                self.warned = True
                probes = self.num * self.runner.plan.chunk
                sys.stderr.write("\r" + _LONG_MSG.format(minutes=(elapsed + remaining) / 60, probes=probes))
            if self.shown or elapsed + remaining > PROGRESS_AFTER:
                self.shown = True
                label = f"{self.runner.label}: " if self.runner.label else ""
                sys.stderr.write(f"\rjgc {label}chunk {self.done_chunks}/{self.num}, ~{remaining:.0f} s left   ")
                sys.stderr.flush()

    def done(self):
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


class Engine:
    """Evaluates a check's function along probe sets, each leaf's probes on its path.

    On the host, with partial evaluation on, every checked leaf gets the path the cost model
    of `jgc/_partial/` picks: the plain engine (the whole function per probe), *partial*
    (only the equations downstream of the leaf) or *sparse* (only the entries a one-entry
    change touches); each non-plain leaf has its own chunk program. Under a trace every
    probe takes the plain engine (one program). `paths` says which path each leaf took.
    """

    def __init__(self, problem, kind: str, num_probes: int, chunk_size=None, partial=True, key=None, project=None):
        from ._problem import LOSS

        p = self.problem = problem
        self.kind, self.chunk_size = kind, chunk_size
        self.devices = 1 if mesh() is None else jax.device_count()
        want = partial and kind == _probes.COORDS and p.kind == LOSS and not p.stencil.complex
        self.traced_loss = None
        # the function traced twice: a function that draws random numbers (or reads changing state)
        # when it is traced gives every compiled program another function (`same_trace` False)
        # (fresh wrappers each time: JAX caches the trace of a function it has seen)
        first = jax.make_jaxpr(lambda t, d: p.fun(t, d))(p.theta, p.data)
        second = jax.make_jaxpr(lambda t, d: p.fun(t, d))(p.theta, p.data)
        self.same_trace = _jaxpr.same_program(first, second)
        if want and not p.traced:
            self.traced_loss = _partial.trace(p.fn, p.lay, p.params, p.args, p.stencil)
            self.paths = self.traced_loss.paths
            self.facts = _jaxpr.facts(self.traced_loss.closed.jaxpr)  # its inputs: the checked leaves
        else:  # inside a trace every probe runs the whole loss (one program)
            self.paths = tuple(_partial.PLAIN_TRACED if c else "" for c in p.lay.checked) if want else ()
            self.facts = _jaxpr.facts(first.jaxpr, first.jaxpr.invars[:1])  # downstream of θ
        self.batching = batching(self.facts, first.jaxpr)
        m = p.stencil.evals_per_probe
        plan = Plan(kind, m, self._chunk(p.lay.n, num_probes + 1), self.batching, p.stencil.complex)
        self._plain = lambda: p.runner(plan, key, project)
        self._plain_runner = None
        self.routes = self._routes() if self.traced_loss is not None else []

    @property
    def runner(self) -> Runner:
        """The plain engine: the whole function per probe (compiled on first use)."""
        if self._plain_runner is None:
            self._plain_runner = self._plain()
        return self._plain_runner

    def _chunk(self, n: int, num_probes: int) -> int:
        if self.chunk_size is not None:
            return -(-self.chunk_size // self.devices) * self.devices
        return chunk_size(n, num_probes, self.problem.stencil.evals_per_probe, self.devices)

    def _routes(self):
        """Runners for the leaves on the partial and sparse paths: (first coordinate, end, runner)."""
        p, traced = self.problem, self.traced_loss
        assert traced is not None
        lay = p.lay
        leaves = [(k, i) for k, i in enumerate(lay.checked_index) if traced.paths[i] in (_partial.PARTIAL, _partial.SPARSE)]
        if not leaves:
            return []
        spec = _partial.Base(p.fun.ref, lay, p.static, traced.sig, traced)
        base = p.call(("base", spec), spec, list(traced.closed.consts))  # the args' values flow in
        routes, m = [], p.stencil.evals_per_probe
        for k, i in leaves:
            o, s = lay.offsets[k], lay.sizes[k]
            plan = Plan(_probes.COORDS, m, self._chunk(s, s), self.batching)
            if traced.paths[i] == _partial.PARTIAL:
                fun = _partial.LeafFun(p.fun.ref, lay, p.static, k, traced.sig, traced)
                body = chunk_function(fun, plan)
            else:
                fun = _partial.EntryFun(p.fun.ref, lay, p.static, k, traced.sig, traced)
                body = entry_chunk_function(fun, plan, lay.shapes[i], np.dtype(lay.dtypes[i]))
            program = _jit.program(("leaf", fun, plan), body)
            theta_k = to_device(p.theta_x[o : o + s])
            routes.append((o, o + s, Runner(program, plan, theta_k, base)))
        return routes

    def run(self, probes: _probes.Probes, offsets, repeat=None):
        """(values, h, proj, spread, evals) for every probe, each on the runner of its leaf's path
        (see `Runner.run`; `repeat` marks the probes whose chunk is evaluated twice)."""
        if not self.routes or probes.kind != _probes.COORDS:
            return self.runner.run(probes, offsets, repeat)
        start = np.asarray(probes.start)
        marks = np.zeros(start.shape, bool) if repeat is None else np.asarray(repeat, bool)
        taken = np.zeros(start.shape, bool)
        parts, spread, evals = [], 0.0, 0
        for lo, hi, runner in self.routes:
            rows = np.flatnonzero((start >= lo) & (start < hi))
            taken[rows] = True
            if rows.size:
                sub = probes.take(rows)
                sub = dataclasses.replace(sub, start=np.asarray(sub.start) - lo)
                *vals, s, e = runner.run(sub, offsets, marks[rows])
                parts.append((rows, vals))
                spread, evals = max(spread, float(s)), evals + e
        rows = np.flatnonzero(~taken)
        if rows.size:
            *vals, s, e = self.runner.run(probes.take(rows), offsets, marks[rows])
            parts.append((rows, vals))
            spread, evals = max(spread, float(s)), evals + e
        first = parts[0][1]
        out = [np.zeros((start.size,) + np.shape(x)[1:], np.asarray(x).dtype) for x in first]
        for rows, vals in parts:
            for o, v in zip(out, vals, strict=True):
                o[rows] = v
        return (*out, np.asarray(spread, np.real(out[0]).dtype), evals)
