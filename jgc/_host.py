"""Host functions: a NumPy loss evaluated through `jax.pure_callback`, and a NumPy gradient.

A `loss_fn` that cannot be traced (it converts its inputs to NumPy) becomes a `HostLoss`: a
JAX function whose every evaluation is one `jax.pure_callback` into the user's code, with
NumPy copies of its inputs. The engine vmaps it like any loss; the callback runs one point
per call (`vmap_method="sequential"`), or a whole chunk per call when the user says the loss
broadcasts over a leading axis (`vectorized=True`: every checked parameter leaf arrives with a
leading batch axis and the loss returns one cost per row). Everything downstream — steps, the
noise probe, kinks, determinism, the verdict, the float64 re-check, confirmation — is the one
pipeline. A `Meter` counts the calls and the time spent in them for the report.

A gradient computed on the host (`host_gradient`) is matched to the params: the course's
`dW1`/`db1` keys for params `W1`/`b1` (extra keys listed as ignored), float64 results for
float32 params cast (the leaves named), every shape mismatch named at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import _jit, _tree, _validate
from ._typing import Tracer

SEQUENTIAL, VECTORIZED = "sequential", "vectorized"

# Probes per chunk (one callback each) for a host loss called once per point: the callback
# boundary is crossed once per chunk, and the null probes that pad a chunk (copies of θ) are
# evaluated once.
HOST_CHUNK = 32

HOST_TRACED = (
    "{name} cannot be traced (it raised {error}: {message}), so jgc evaluates it on the host, through "
    "jax.pure_callback with NumPy copies of its inputs: that needs concrete inputs, but {where} is a traced "
    "value here (inside jax.jit, jax.vmap or another transformation), and a NumPy function cannot run on "
    "the values of a trace. Call jgc outside the transformation (a host loss is checked on concrete NumPy "
    "or JAX arrays), or write {name} with jax.numpy to check it inside jit/vmap."
)


@dataclasses.dataclass
class Meter:
    """What the host calls of one check cost: callback calls, points evaluated, seconds inside them."""

    calls: int = 0
    points: int = 0
    seconds: float = 0.0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    error: BaseException | None = None  # the first exception the user's function raised in a callback


# The determinism check evaluates a chunk of probes twice (`_engine.Runner.run`); for a host loss,
# whose every evaluation is a Python call, it evaluates this many of them again, spread over the
# chunk's coordinates: a NumPy loss that draws random numbers gives another value at every call.
REPEAT_PROBES = 4

# The meter of the one check that runs a host loss now. The callback runs on XLA's threads and
# finds its meter by the loss alone, so checks of the same host loss take turns (a NumPy loss holds
# the GIL anyway: they would not run in parallel); checks of different losses run concurrently.
_METERS: dict = {}
_LOCK = threading.Lock()
_FREE = threading.Condition(_LOCK)


def _copy(x):
    """A writable NumPy copy of an array leaf (the user's code may write into its inputs)."""
    if _tree.is_array(x) and not _tree.is_key(x):
        return np.array(x, copy=True)
    return x


def host_copy(tree):
    """The pytree with every array leaf a fresh NumPy array (JAX arrays fetched explicitly)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    leaves = [jax.device_get(x) if isinstance(x, jax.Array) and not _tree.is_key(x) else x for x in leaves]
    return jax.tree_util.tree_unflatten(treedef, [_copy(x) for x in leaves])


def cost_of(out, name: str):
    """The cost of a loss's output: the output itself, or the first item of `(cost, cache)`."""
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    return out


@dataclasses.dataclass(frozen=True)
class _Callback:
    """The host side of one traced call: hashable, so two traces give the same program.

    Under the engine's vmap it receives a whole chunk at once (`vmap_method="expand_dims"`:
    batched operands with a leading axis of B, the others of 1) and calls the user's loss once
    per point (sequential) or once on the batch (vectorized): one crossing of the callback
    boundary per chunk, not per point."""

    loss: HostLoss
    treedef: object
    statics: tuple  # per leaf: None for an operand, else the `_jit.Static` value
    shapes: tuple  # per operand, its unbatched shape
    checked: tuple  # per operand, whether it is a checked (floating) parameter leaf
    dtype: str
    dtypes: tuple  # per operand, its dtype (64-bit ones travel bitcast to uint32)

    def _call(self, xs):
        it = iter(xs)
        leaves = [next(it) if s is None else s.value for s in self.statics]
        params, args = jax.tree_util.tree_unflatten(self.treedef, leaves)
        try:
            return np.asarray(cost_of(self.loss.ref()(params, *args), self.loss.name))
        except Exception as e:  # kept for the check to raise as the user's (JAX reports a callback's error as its own)
            meter = _METERS.get(self.loss)
            if meter is not None and meter.error is None:
                meter.error = (
                    _validate.call_error(self.loss.name, e, (params, *args)) if type(e) in (TypeError, ValueError) else e
                )
            raise

    def __call__(self, *operands):
        try:
            return self._run(*operands)
        except Exception as e:  # kept for the check to raise (JAX reports a callback's error as its own)
            meter = _METERS.get(self.loss)
            if meter is not None and meter.error is None:
                meter.error = e
            raise

    def _run(self, *operands):
        t0 = time.perf_counter()
        xs = [np.asarray(x) for x in operands]
        xs = [np.ascontiguousarray(x).view(np.dtype(d))[..., 0] if _wide(d) else x for x, d in zip(xs, self.dtypes, strict=True)]
        batched = any(np.ndim(x) == len(s) + 1 for x, s in zip(xs, self.shapes, strict=True))
        size = max((x.shape[0] for x in xs), default=1) if batched else 1
        vectorized = self.loss.mode == VECTORIZED
        if not batched:
            xs = [x[None] for x in xs]  # one point: a batch of one
        if vectorized:  # the checked leaves with their batch axis, the rest as they are
            one = [
                np.array(np.broadcast_to(x, (size,) + x.shape[1:]) if c else x[0]) for x, c in zip(xs, self.checked, strict=True)
            ]
            out = self._call(one)
            if out.size != size:
                raise ValueError(
                    f"{self.loss.name} was declared vectorized (it broadcasts over a leading axis): called with "
                    f"{size} points (every checked parameter leaf with a leading axis of {size}), it must return "
                    f"{size} costs; received an array of shape {out.shape}."
                )
            values = out.reshape(size)
        else:  # one call per distinct point: the engine pads a chunk with copies of θ (null probes)
            values, seen = np.empty(size, np.float64), {}
            for b in range(size):
                point = [x[b if x.shape[0] == size else 0] for x in xs]
                key = b"".join(x.tobytes() for x, c in zip(point, self.checked, strict=True) if c)
                if key in seen:
                    values[b] = values[seen[key]]
                    continue
                seen[key] = b
                out = self._call([np.array(x) for x in point])
                if out.size != 1:
                    raise ValueError(
                        f"{self.loss.name} must return a scalar cost (or (cost, cache)); received an array of shape "
                        f"{out.shape}. Reduce it, e.g. with np.sum or np.mean."
                    )
                if not (np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)):
                    raise TypeError(f"{self.loss.name} must return a real floating-point cost; received dtype {out.dtype}.")
                values[b] = out.reshape(())
        dtype = np.dtype(self.dtype)
        values = values.astype(dtype) if batched else values.reshape(()).astype(dtype)
        meter = _METERS.get(self.loss)
        if meter is not None:
            with _LOCK:
                meter.calls += 1
                meter.points += size if vectorized else len(seen)
                meter.seconds += time.perf_counter() - t0
        return np.ascontiguousarray(values).view(np.uint32).reshape(values.shape + (2,)) if _wide(dtype) else values


def _wide(dtype) -> bool:
    """64-bit values cross the callback bitcast to pairs of uint32: JAX converts a callback's inputs and
    outputs with the x64 setting of the thread that runs it (`jax.enable_x64` is thread-local), which
    would round float64 to float32 on another thread."""
    return np.dtype(dtype).itemsize == 8 and np.dtype(dtype).kind in "fiu"


@dataclasses.dataclass(frozen=True)
class HostLoss:
    """A loss that cannot be traced, as a JAX function of (params, *args) evaluated on the host.

    Hashable by the user's function and the mode, so equal host losses share compiled programs.
    """

    ref: _jit.Ref
    name: str = "loss_fn"
    mode: str = SEQUENTIAL

    jgc_wrapper = True  # jgc's own wrapper: `_jit.Ref` holds it and looks inside for the user's function

    def __call__(self, params, *args):
        keyed, treedef = jax.tree_util.tree_flatten_with_path((params, args))
        statics, operands, shapes, checked = [], [], [], []
        for path, leaf in keyed:
            if _tree.is_array(leaf) and not _tree.is_key(leaf):
                statics.append(None)
                operands.append(leaf)
                shapes.append(tuple(np.shape(leaf)))
                checked.append(path[0].idx == 0 and jnp.issubdtype(leaf.dtype, jnp.inexact))
            else:
                statics.append(_jit.Static(leaf))
        inexact = [x.dtype for x, c in zip(operands, checked, strict=True) if c]
        dtype = np.dtype(jnp.result_type(*inexact) if inexact else jax.dtypes.canonicalize_dtype(np.float64))
        dtypes = tuple(np.dtype(x.dtype).name for x in operands)
        operands = [jax.lax.bitcast_convert_type(x, jnp.uint32) if _wide(d) else x for x, d in zip(operands, dtypes, strict=True)]
        cb = _Callback(self, treedef, tuple(statics), tuple(shapes), tuple(checked), dtype.name, dtypes)
        spec = jax.ShapeDtypeStruct((2,), jnp.uint32) if _wide(dtype) else jax.ShapeDtypeStruct((), dtype)
        out = jax.pure_callback(cb, spec, *operands, vmap_method="expand_dims")
        return jax.lax.bitcast_convert_type(out, dtype) if _wide(dtype) else out


def options(opts, vectorized: bool):
    """A check's static options for a host loss: no partial evaluation (a callback has no
    parts), small chunks for one point per call (little padding)."""
    chunk = opts.chunk_size if opts.chunk_size is not None or vectorized else HOST_CHUNK
    return dataclasses.replace(opts, partial=False, chunk_size=chunk)


def numpy_inputs(tree) -> bool:
    """Every array of `tree` is a NumPy array (none is a JAX array or a tracer): NumPy code's inputs."""
    arrays = [x for x in jax.tree_util.tree_leaves(tree) if _tree.is_array(x)]
    return bool(arrays) and all(isinstance(x, (np.ndarray, np.generic)) for x in arrays)


def refused(e: BaseException, name: str, tree) -> bool:
    """Whether tracing `name` failed because it is NumPy code: it converts a tracer to NumPy or
    Python, or (its inputs all NumPy arrays) JAX's semantics refuse what NumPy allows (writing into
    an array, rank promotion under jax_numpy_rank_promotion="raise")."""
    if isinstance(e, _validate.Untraceable):
        return e.name == name
    return isinstance(e, _validate.CallError) and str(e).startswith(f"{name} raised") and numpy_inputs(tree)


def traceable(fn, name: str, *args) -> bool:
    """Whether `fn(*args)` traces (shapes only); False when it is NumPy code (`refused`)."""
    try:
        jax.eval_shape(lambda *a: _validate.trace(name, fn, *a), *args)
    except (_validate.Untraceable, _validate.CallError) as e:
        if not refused(e, name, args):
            raise
        return False
    return True


def refuse_traced(name: str, error: BaseException, tree, labels=("params", "args")):
    """Raise the error of a host function under the caller's transformation, naming a traced input."""
    cause = error.__cause__ or error
    text = str(cause).strip()
    message = text.splitlines()[0][:160] if text else ""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, Tracer):
            where = labels[path[0].idx] + jax.tree_util.keystr(path[1:])
            break
    else:
        where = "an input"
    raise TypeError(HOST_TRACED.format(name=name, error=type(cause).__name__, message=message, where=where)) from None


_NEEDS_GRAD = (
    "; a {name} that cannot be traced is evaluated on the host only against a gradient you pass: {why} "
    "differentiates {name} with jax.grad, which needs it written with jax.numpy. Pass the gradient under test "
    "as grad_fn to check a NumPy loss"
)


def run(go, loss_fn, params, args, vectorized: bool, name: str = "loss_fn", host: bool | None = None, autograd: str = ""):
    """`go(loss, host)` with `loss_fn` as given when it traces, else as a `HostLoss` (host=True),
    its cost in `host_notes` of the result. `host`: None decides by tracing, True forces the host.
    `autograd`: what needs `jax.grad` of the loss ("grad_fn=None"), where a host loss cannot serve."""
    _validate.flag("vectorized", vectorized)
    if host is not None:
        _validate.flag("host", host)
    if host is not True:
        try:
            return go(loss_fn, False)
        except (_validate.Untraceable, _validate.CallError) as e:
            if not refused(e, name, (params, args)) or host is False:
                raise
            if autograd:
                if isinstance(e, _validate.Untraceable):
                    raise _validate.untraceable(name, e.__cause__ or e, _NEEDS_GRAD.format(name=name, why=autograd)) from None
                raise
            if _jit.is_traced((params, args)):
                refuse_traced(name, e, (params, args))
    elif autograd:
        raise TypeError(f"host=True evaluates {name} on the host, where it has no jax.grad: {autograd} needs a traced {name}.")
    elif _jit.is_traced((params, args)):
        refuse_traced(name, TypeError("host=True"), (params, args))
    loss = HostLoss(_jit.Ref(loss_fn), name, VECTORIZED if vectorized else SEQUENTIAL)
    meter = Meter()
    with _FREE:
        while loss in _METERS:  # another thread checks the same host loss: its turn first
            _FREE.wait()
        _METERS[loss] = meter
    try:
        res = go(loss, True)
    except jax.errors.JaxRuntimeError as e:
        if meter.error is None:
            raise
        raise meter.error from e
    finally:
        with _FREE:
            _METERS.pop(loss, None)
            _FREE.notify_all()
    res = with_notes(res, [host_note(name, loss.mode)], first=True)
    if hasattr(res, "host_cost"):  # a check's result (numeric_grad's array and locate's Location have none)
        cost = np.array([meter.calls, meter.points, meter.seconds, time.perf_counter() - meter.started], np.float64)
        res = dataclasses.replace(res, host_cost=cost)
    return res


def host_note(name: str, mode: str) -> str:
    """What ran on the host: the same for the same check at every point (its cost is `host_cost`)."""
    how = f"{name} called on a chunk of points at once (vectorized)" if mode == VECTORIZED else f"{name} called once per point"
    return f"{name} ran on the host (NumPy, through jax.pure_callback; {how}); partial evaluation does not apply to a host loss"


def cost_note(cost) -> str:
    """The report line of a `host_cost` (callbacks, points, seconds inside them, seconds in all)."""
    calls, points, inside, total = (float(x) for x in np.asarray(cost, np.float64))
    per, outside = inside / max(1.0, points), max(0.0, total - inside)
    return (
        f"host cost: {int(points):,} evaluations in {int(calls):,} callbacks, {inside:.3g} s inside them "
        f"({per * 1e3:.3g} ms per evaluation), {outside:.3g} s in jgc ({outside / max(1.0, points) * 1e3:.3g} ms per evaluation)"
    )


def with_notes(res, notes, first: bool = False):
    """The result with more host-side notes (a static field: host results are never batched)."""
    if not hasattr(res, "host_notes"):  # a result that is not a check's (numeric_grad's array, locate's Location)
        return res
    notes = tuple(n for n in notes if n and n not in res.host_notes)
    if not notes:
        return res
    return dataclasses.replace(res, host_notes=notes + tuple(res.host_notes) if first else tuple(res.host_notes) + notes)


# ---------------------------------------------------------------- a gradient computed on the host


_MISSING = (
    "{name} returned a dict without a gradient for parameter {path}: expected a key {key!r} (or the course's "
    "{dkey!r}); received keys {keys}."
)


def _match_names(params, grad, name: str, prefix: str = ""):
    """`grad` restructured like `params` where both are dicts keyed by name and `grad` uses the
    course's keys (`dW1` for `W1`) or carries extra entries; (tree, ignored key paths)."""
    if not (isinstance(params, dict) and isinstance(grad, dict)):
        return grad, []
    out, ignored, used = {}, [], set()
    for k, v in params.items():
        path = f"{prefix}[{k!r}]"
        if k in grad:
            gk = k
        elif isinstance(k, str) and f"d{k}" in grad:
            gk = f"d{k}"
        else:
            keys = sorted(map(repr, grad))
            raise ValueError(_MISSING.format(name=name, path=path, key=k, dkey=f"d{k}", keys=", ".join(keys)))
        used.add(gk)
        out[k], more = _match_names(v, grad[gk], name, path)
        ignored += more
    ignored += [f"{prefix}[{k!r}]" for k in grad if k not in used]
    return out, ignored


def host_gradient(lay: _tree.Layout, params, grad, name: str = "grad_fn"):
    """(flat gradient (n,) in θ's dtype, notes) of a gradient pytree computed on the host.

    Keys matched by name (the course's `dW1` for `W1`; extra keys ignored and listed); a
    floating result of another dtype than its parameter (NumPy's float64 for float32 params) is
    cast and named; shapes must match exactly, every leaf that does not is named at once.
    """
    grad, ignored = _match_names(params, grad, name)
    leaves = _tree.leaves_up_to(lay, grad, name, "params")
    casts, parts = [], []
    for i in lay.checked_index:
        g, path, shape, dtype = leaves[i], lay.paths[i], lay.shapes[i], lay.dtypes[i]
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            leaves[i] = g = np.asarray(g)
        if g is None or not hasattr(g, "shape") or not hasattr(g, "dtype"):
            raise TypeError(f"{name} output {path} is {type(g).__name__}; expected an array of shape {shape} and dtype {dtype}.")
    _validate.wrong_shapes(lay, leaves, name)
    for i in lay.checked_index:
        g, path, dtype = leaves[i], lay.paths[i], lay.dtypes[i]
        if not jnp.issubdtype(g.dtype, jnp.floating):
            raise TypeError(
                f"{name} output {path}: dtype {jnp.dtype(g.dtype).name}; expected a floating dtype like the parameter's {dtype}."
            )
        if jnp.dtype(g.dtype).name != dtype:
            casts.append(f"{path} ({jnp.dtype(g.dtype).name})")
        parts.append(np.ravel(np.asarray(jax.device_get(g))))
    flat = np.concatenate(parts).astype(np.dtype(lay.dtype)) if parts else np.zeros(0, np.dtype(lay.dtype))
    notes = []
    if casts:
        notes.append(f"{name} returned {', '.join(casts)} for {lay.dtype} parameters: cast to {lay.dtype}")
    if ignored:
        notes.append(f"{name} returned entries that are not parameters, ignored: {', '.join(ignored)}")
    return flat, notes
