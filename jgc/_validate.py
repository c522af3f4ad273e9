"""Every input check: options, PRNG keys, what the user's functions return, and whether they trace.

Each message says what was received, what was expected, which function (`loss_fn`,
`grad_fn`, `vjp_fn`, …) and which leaf (by its key path).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from . import _tree
from ._typing import PyTree, Tracer


def callable_(name: str, fn, allow_none: bool = False) -> None:
    if fn is None and allow_none:
        return
    if not callable(fn):
        expected = "a callable or None" if allow_none else "a callable"
        raise TypeError(f"{name} must be {expected}; received {type(fn).__name__}: {fn!r}.")


def positive(name: str, value) -> None:
    """A positive finite scalar or None (a traced value is taken as given)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a positive float or None; received {type(value).__name__}: {value!r}.")
    if isinstance(value, Tracer):
        return
    v = np.asarray(value)
    if v.shape != () or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite scalar or None; received {value!r}.")


def count(name: str, value, allow_none: bool = False) -> None:
    """A positive int (or None)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}; received {value!r}.")


def flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; received {type(value).__name__}: {value!r}.")


def _raw_key_shape() -> tuple[int, ...]:
    """The shape of a legacy raw key (`jax.random.PRNGKey(0)`) of the default PRNG implementation:
    (2,) for threefry, (4,) for "rbg" and "unsafe_rbg" (shapes only: nothing runs)."""
    impl = str(jax.config.jax_default_prng_impl)  # read now: a traced shape could be cached across impls
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def _received(value) -> str:
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{type(value).__name__} {_tree.dtype_name(value)}{tuple(value.shape)}"
    return f"{type(value).__name__}: {value!r}"


def _is_raw_key(value, shape: tuple[int, ...]) -> bool:
    return hasattr(value, "dtype") and not _tree.is_key(value) and value.dtype == jnp.uint32 and tuple(value.shape) == shape


def key(value, name: str = "key", where: str = "") -> None:
    """A PRNG key: a typed key array of shape () (`jax.random.key(0)`, any implementation) or a
    legacy raw uint32 key of the default implementation (`jax.random.PRNGKey(0)`: shape (2,),
    (4,) under jax_default_prng_impl="rbg" or "unsafe_rbg")."""
    if isinstance(value, Tracer) and _tree.is_key(value) and value.shape == ():
        return
    raw = _raw_key_shape()
    if hasattr(value, "dtype") and _tree.is_key(value) and value.shape == () or _is_raw_key(value, raw):
        live(value, name)
        return
    prefix = f"{where}: " if where else ""
    raise TypeError(
        f"{prefix}{name} must be a PRNG key, e.g. jax.random.key(0); received {_received(value)}. (A legacy raw key "
        f"of the default implementation, {jax.config.jax_default_prng_impl}, is accepted too: uint32 of shape {raw}, "
        "from jax.random.PRNGKey(0).)"
    )


_SINGLE_KEY = (
    "{name} is a single PRNG key ({received}); expected a batch of keys, one per seed. Make one "
    "with jax.random.split, e.g. `{name} = jax.random.split(jax.random.key(0), 16)` for 16 seeds "
    "(or jax.random.split(your_key, n))."
)


def keys(value, name: str = "keys", where: str = "") -> int:
    """A batch of PRNG keys, shape (s,) typed or (s, *raw key shape) raw uint32, with s ≥ 1; returns s."""
    raw = _raw_key_shape()
    shape = tuple(int(s) for s in getattr(value, "shape", ()))
    typed = hasattr(value, "dtype") and _tree.is_key(value)
    if typed and shape == () or _is_raw_key(value, raw):
        raise ValueError((f"{where}: " if where else "") + _SINGLE_KEY.format(name=name, received=_received(value)))
    is_raw = hasattr(value, "dtype") and not typed and value.dtype == jnp.uint32 and shape[1:] == raw
    ok = typed and len(shape) == 1 or is_raw and len(shape) == 1 + len(raw)
    if not ok or shape[0] < 1:
        raise ValueError(
            (f"{where}: " if where else "") + f"{name} must be a non-empty batch of PRNG keys, e.g. "
            f"jax.random.split(jax.random.key(0), 16) (shape (s,)); received {_received(value)}."
        )
    live(value, name)
    return shape[0]


# ---------------------------------------------------------------- arrays the user may have lost

_DELETED = (
    "{where} is an array that has been deleted: it was donated to a jitted function "
    "(jax.jit(..., donate_argnums=...) reuses its memory for the outputs) or deleted with .delete(); "
    "{shape}. jgc reads every array it is given: pass the live value (e.g. the output of the donating "
    "call, or a copy made before it)."
)


def live(tree, name: str) -> None:
    """Every JAX array in `tree` is alive (not deleted or donated); names the first that is not."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and not isinstance(leaf, Tracer) and leaf.is_deleted():
            where = name + jax.tree_util.keystr(path)
            shape = f"it had dtype {_tree.dtype_name(leaf)} and shape {tuple(leaf.shape)}"
            raise ValueError(_DELETED.format(where=where, shape=shape))


def live_inputs(params, args, names=("params", "args")) -> None:
    live(params, names[0])
    live(tuple(args), names[1])


# ---------------------------------------------------------------- the step


_STEP_ZERO = (
    "eps={eps!r} is too small for {dtype}: the step of {where} (θ = {theta!r}) is "
    "eps·max(1, |θ|) = {h:.3g}, and θ + h rounds to θ in {dtype}, so the step is 0 and every "
    "finite difference there would be 0/0 (NaN). Steps must be at least {dtype}'s resolution: "
    "eps ≥ {u:.2g} (machine epsilon); the default (eps=None) picks {default:.0e} for method={method!r}."
)


def step(eps, lay: _tree.Layout, theta, method: str) -> None:
    """With a given `eps`, no coordinate's step may round to 0 (θ_j + h == θ_j).

    `theta`: θ on the host (NumPy), or None when traced; then only an `eps` below the
    dtype's machine epsilon at |θ_j| = 1 is refused (it rounds to 0 there)."""
    if eps is None or isinstance(eps, Tracer):
        return
    from . import _stencils

    dtype = np.dtype(lay.low_dtype)
    u = float(np.finfo(dtype).eps)
    default = _stencils.nominal_eps(dtype, method)
    e = dtype.type(np.asarray(eps).item())
    if theta is None:
        one = dtype.type(1)
        if (one + e * one) - one == 0:
            where, t, h = "a coordinate at |θ| = 1", 1.0, float(e)
        else:
            return
    else:
        t = np.asarray(theta)
        hs = e * np.maximum(dtype.type(1), np.abs(t.astype(dtype)))
        zero = np.flatnonzero((t.astype(dtype) + hs) - t.astype(dtype) == 0)
        if not zero.size:
            return
        j = int(zero[0])
        path, index = lay.locate(j)
        where, t, h = f"{path or 'params'}{list(index)}", float(t[j]), float(hs[j])
    raise ValueError(_STEP_ZERO.format(eps=eps, dtype=dtype.name, where=where, theta=t, h=h, u=u, default=default, method=method))


# ---------------------------------------------------------------- what the functions return


def scalar_output(out, name: str = "loss_fn") -> None:
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"{name} must return a scalar array; received {type(out).__name__}: {out!r}.")
    if tuple(shape) != ():
        raise ValueError(
            f"{name} must return a scalar; received an array of shape {tuple(shape)} ({jnp.dtype(dtype).name}). "
            "Reduce it, e.g. with jnp.mean or jnp.sum."
        )
    if not jnp.issubdtype(dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name} must return a floating-point scalar; received dtype {jnp.dtype(dtype).name}.")


_COMPLEX_LOSS = (
    "{name} returned a complex value ({dtype}) for real parameters; jgc checks the gradient of a "
    "real-valued loss, as jax.grad does (it refuses complex outputs), rather than silently checking "
    "the real part. Return the real number the gradient was derived for: jnp.real(J) for the "
    "gradient of the real part, jnp.abs(J) ** 2 for that of |J|²."
)


def loss_output(out, name: str = "loss_fn", complex_params: bool = False):
    """The loss's value as a scalar array: a Python float or a NumPy scalar (a constant loss,
    whose gradient is 0) becomes an array; anything else must be a real floating scalar
    (complex only for complex parameters, the complex step)."""
    if isinstance(out, float) or isinstance(out, (np.ndarray, np.generic)) and np.ndim(out) == 0:
        out = jnp.asarray(out)
    scalar_output(out, name)
    if not complex_params and jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise TypeError(_COMPLEX_LOSS.format(name=name, dtype=jnp.dtype(out.dtype).name))
    return out


def numbers(name: str, tree) -> None:
    """Every leaf of `tree` is an array or a number (relative_error's inputs)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, bool) or not (_tree.is_array(leaf) or isinstance(leaf, (int, float, complex))):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} is {type(leaf).__name__}: {leaf!r}; expected an array "
                "or a number at every leaf."
            )
        if _tree.is_key(leaf) or _tree.is_array(leaf) and not jnp.issubdtype(leaf.dtype, jnp.number):
            raise TypeError(f"{name}{jax.tree_util.keystr(path)} has dtype {_tree.dtype_name(leaf)}; expected a numeric array.")
    live(tree, name)


def float_outputs(out: PyTree, name: str = "f") -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} output{jax.tree_util.keystr(path)} is {getattr(dtype, 'name', type(leaf).__name__)}; "
                "expected floating-point arrays only (return auxiliary outputs from another function)."
            )


def like_params(lay: _tree.Layout, tree: PyTree, name: str = "grad_fn", like: str = "params", noun: str = "parameter") -> None:
    """`tree` must have the structure of `lay` (`like` names it), and the shapes and dtypes of
    its checked leaves (`noun` names one)."""
    leaves = _tree.leaves_up_to(lay, tree, name, like)
    for i in lay.checked_index:
        g = leaves[i]
        path, shape, dtype = lay.paths[i], lay.shapes[i], lay.dtypes[i]
        if g is not None and not hasattr(g, "shape") and jax.tree_util.treedef_children(jax.tree_util.tree_structure(g)):
            where = f"at {path}" if path else "at the top"
            raise ValueError(
                f"{name} returned a pytree whose structure differs from {like}: a {type(g).__name__} {where}, where "
                f"{like} has an array of shape {shape}. Expected the structure of {like}: {lay.treedef}."
            )
        if g is None or not hasattr(g, "shape") or not hasattr(g, "dtype"):
            raise TypeError(f"{name} output {path} is {type(g).__name__}; expected an array of shape {shape} and dtype {dtype}.")
    wrong_shapes(lay, leaves, name, noun)
    for i in lay.checked_index:
        g, path, dtype = leaves[i], lay.paths[i], lay.dtypes[i]
        if jnp.dtype(g.dtype).name != dtype:
            raise TypeError(f"{name} output {path}: dtype {jnp.dtype(g.dtype).name} != {noun} dtype {dtype}.")


def _only_broadcasts(a: tuple, b: tuple) -> bool:
    """The shapes differ but broadcast together with as many entries: (1, D) for (D,), (D, 1) for (D,)."""
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return int(np.prod(a)) == int(np.prod(b))


def wrong_shapes(lay: _tree.Layout, leaves: list, name: str, noun: str = "parameter") -> None:
    """Every checked leaf of `leaves` (arrays) has its shape in `lay`; one error names every one that does not."""
    bad = [
        (lay.paths[i], tuple(leaves[i].shape), lay.shapes[i])
        for i in lay.checked_index
        if tuple(leaves[i].shape) != lay.shapes[i]
    ]
    if not bad:
        return
    parts = [
        f"{name} output {p}: shape {g} != {noun} shape {s}" + " (it only broadcasts)" * _only_broadcasts(g, s) for p, g, s in bad
    ]
    hint = ""
    if any(_only_broadcasts(g, s) for _, g, s in bad):
        hint = (
            f" Shapes must match exactly: an output whose shape only broadcasts to the {noun}'s ((1, D) for (D,)) is "
            "refused, not broadcast (that would hide a transposed or wrongly summed gradient); reshape it, e.g. "
            "db.reshape(b.shape)."
        )
    raise ValueError("; ".join(parts) + "." + hint)


# ---------------------------------------------------------------- tracing

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)

UNTRACEABLE = (
    "{name} cannot be traced: jgc evaluates it under jax.jit (and jax.vmap) with abstract "
    "arrays, so it may not convert its inputs to Python or NumPy values. It raised "
    "{error}: {message}. Write {name} with jax.numpy (jnp.asarray instead of np.asarray, "
    "jnp.where or jax.lax.cond instead of a Python `if` on an array, no float()/int()/.item() "
    "on arrays){extra}."
)


class Untraceable(TypeError):
    """A user function could not be traced; `name` says which (`loss_fn`, `grad_fn`, …)."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def untraceable(name: str, e: BaseException, extra: str = "") -> Untraceable:
    text = str(e).strip()
    message = text.splitlines()[0][:200] if text else ""
    return Untraceable(UNTRACEABLE.format(name=name, error=type(e).__name__, message=message, extra=extra), name)


class CallError(Exception):
    """Marks an error raised by a user function, re-raised with its name and its inputs."""


class CallTypeError(CallError, TypeError):
    pass


class CallValueError(CallError, ValueError):
    pass


_HINTS = (
    (
        "Cannot `vmap` ordered IO callback",
        "{name} calls an ordered callback (io_callback(..., ordered=True) or an ordered "
        "jax.debug.print), which JAX cannot vmap: a check over several points at once (check_seeds, "
        "check_snapshots, jgc.testing.assert_grad_seeds, or a check under your own jax.vmap) vmaps it. "
        "Check one point at a time (jgc.check_grad in a loop), or make the callback unordered (ordered=False).",
    ),
    (
        "IO callbacks do not support JVP",
        "{name} calls jax.experimental.io_callback, which JAX cannot differentiate; grad_fn=None checks "
        "jax.grad(loss_fn). Pass the gradient under test as grad_fn (the callback is then only evaluated).",
    ),
    (
        "pure_callback",
        "{name} calls jax.pure_callback: it needs a custom_jvp/custom_vjp rule to be differentiated, "
        "and vmap_method= to be vmapped; jgc evaluates the loss at many points at once with jax.vmap.",
    ),
)

_SHAPE = re.compile(r"\((\d+(?:,\s*\d+)*),?\)|\b[a-z]+\d*\[([\d,]*)\]")


def _labels(name: str, n: int) -> list[str]:
    """The names of a user function's positional arguments, as its docs call them."""
    if name == "f":
        return [f"primals[{i}]" for i in range(n)]
    fixed = {"vjp_fn": ("primals", "cotangent"), "jvp_fn": ("primals", "tangents"), "hvp_fn": ("params", "v")}
    head = list(fixed.get(name, ("params",)))[:n]
    return head + [f"args[{i}]" for i in range(n - len(head))]


def _spec(leaf) -> str:
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return f"{_tree.dtype_name(leaf)}{list(leaf.shape)}"
    return f"{type(leaf).__name__} {leaf!r}"[:40]


def describe_call(name: str, args: tuple, message: str = "", limit: int = 12) -> str:
    """What a user function was called with (each argument's leaves with dtypes and shapes), and
    which of them have a shape that the error message mentions."""
    lines, by_shape = [], {}
    for label, arg in zip(_labels(name, len(args)), args, strict=True):
        keyed = jax.tree_util.tree_flatten_with_path(arg)[0]
        if len(keyed) == 1 and not keyed[0][0]:
            lines.append(f"    {label}: {_spec(keyed[0][1])}")
        else:
            shown = ", ".join(f"{jax.tree_util.keystr(p)}: {_spec(x)}" for p, x in keyed[:limit])
            lines.append(f"    {label}: {{{shown}{', …' if len(keyed) > limit else ''}}}")
        for p, x in keyed:
            if hasattr(x, "shape"):
                by_shape.setdefault(tuple(int(d) for d in x.shape), []).append(label + jax.tree_util.keystr(p))
    mentioned = []
    for m in _SHAPE.finditer(message):
        text = m.group(1) if m.group(1) is not None else m.group(2)
        shape = tuple(int(d) for d in text.replace(" ", "").split(",") if d)
        if shape in by_shape and shape not in [s for s, _ in mentioned]:
            mentioned.append((shape, by_shape[shape]))
    out = f"  It was called as {name}({', '.join(_labels(name, len(args)))}) with\n" + "\n".join(lines)
    if mentioned:
        parts = [f"{shape} is the shape of {', '.join(where[:3])}{' …' if len(where) > 3 else ''}" for shape, where in mentioned]
        out += "\n  In the error: " + "; ".join(parts) + "."
    return out


def call_error(name: str, e: BaseException, args: tuple | None) -> CallError:
    """The error `e` raised by (or, `args` None, while vmapping) user function `name`, with a hint."""
    message = str(e).strip().split("\n-----")[0]  # without JAX's note on filtered frames
    hint = next((h.format(name=name) for key, h in _HINTS if key in message), None)
    if hint is None:
        hint = (
            f"The error is raised inside {name}, from its inputs: check that their shapes and dtypes are "
            f"what {name} expects (params and args are passed to it unchanged)."
        )
    call = "" if args is None else describe_call(name, args, message) + "\n"
    text = f"{name} raised {type(e).__name__}: {message}\n{call}  {hint}"
    cls = CallTypeError if isinstance(e, TypeError) else CallValueError
    return cls(text)


def trace(name: str, fn, *args, extra: str = ""):
    """`fn(*args)`, turning JAX's tracer-conversion errors into one that names `name`, and the
    TypeError/ValueError raised inside a user function (a shape mismatch with its args) into one
    that names the function and shows what it was called with."""
    try:
        return fn(*args)
    except _TRACER_ERRORS as e:
        raise untraceable(name, e, extra) from e
    except (TypeError, ValueError) as e:
        if type(e) not in (TypeError, ValueError) or getattr(fn, "jgc_wrapper", False):
            raise  # jgc's own errors, errors already named, and the user's own exception types
        raise call_error(name, e, args) from e


def vmapped(name: str, fn, *args):
    """`fn(*args)` for a `jax.vmap` over user functions: JAX's refusal to vmap an ordered callback
    (raised at the vmap, outside the function) named as `name`'s."""
    try:
        return fn(*args)
    except ValueError as e:
        if isinstance(e, CallError) or "Cannot `vmap` ordered" not in str(e):
            raise
        raise call_error(name, e, None) from e


def prepare(params):
    """Python floats in params become arrays of JAX's default float dtype (so they are checked);
    nothing is mutated. Host (NumPy) arrays: no transfer, no eager op (jax_transfer_guard)."""
    dtype = jax.dtypes.canonicalize_dtype(np.float64)
    return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype) if isinstance(x, float) else x, params)


def options(loss_fn, grad_fn, method, eps, tol, chunk_size, grad_name: str | None = "grad_fn") -> None:
    """The options every gradient check shares."""
    from . import _stencils

    callable_("loss_fn", loss_fn)
    if grad_name is not None:
        callable_(grad_name, grad_fn, allow_none=True)
    _stencils.get(method)
    positive("eps", eps)
    positive("tol", tol)
    count("chunk_size", chunk_size, allow_none=True)
