"""Every input check: options, PRNG keys, what the user's functions return, and whether they trace.

Each message says what was received, what was expected, which function (`loss_fn`,
`grad_fn`, `vjp_fn`, …) and which leaf (by its key path).
"""

from __future__ import annotations

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


def key(value, name: str = "key") -> None:
    """A PRNG key: a typed key array of shape () or a raw uint32 key of shape (2,)."""
    if isinstance(value, Tracer) and _tree.is_key(value) and value.shape == ():
        return
    ok = hasattr(value, "dtype") and (
        _tree.is_key(value) and value.shape == () or value.dtype == jnp.uint32 and tuple(value.shape) == (2,)
    )
    if not ok:
        raise TypeError(
            f"{name} must be a PRNG key, e.g. jax.random.key(0); received {type(value).__name__} "
            f"{getattr(value, 'dtype', '')}{tuple(getattr(value, 'shape', ()))}."
        )


def keys(value, name: str = "keys") -> int:
    """A batch of PRNG keys, shape (s,) typed or (s, 2) raw uint32, with s ≥ 1; returns s."""
    shape = tuple(int(s) for s in getattr(value, "shape", ()))
    typed = hasattr(value, "dtype") and _tree.is_key(value)
    ok = typed and len(shape) == 1 or hasattr(value, "dtype") and value.dtype == jnp.uint32 and len(shape) == 2 and shape[1] == 2
    if not ok or shape[0] < 1:
        raise ValueError(
            f"{name} must be a non-empty batch of PRNG keys, e.g. jax.random.split(jax.random.key(0), 16) "
            f"(shape (s,)); received {type(value).__name__} {getattr(value, 'dtype', '')}{shape}."
        )
    return shape[0]


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
        if tuple(g.shape) != shape:
            raise ValueError(f"{name} output {path}: shape {tuple(g.shape)} != {noun} shape {shape}.")
        if jnp.dtype(g.dtype).name != dtype:
            raise TypeError(f"{name} output {path}: dtype {jnp.dtype(g.dtype).name} != {noun} dtype {dtype}.")


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


def is_tracer_error(e: BaseException) -> bool:
    return isinstance(e, _TRACER_ERRORS)


class Untraceable(TypeError):
    """A user function could not be traced; `name` says which (`loss_fn`, `grad_fn`, …)."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def untraceable(name: str, e: BaseException, extra: str = "") -> Untraceable:
    text = str(e).strip()
    message = text.splitlines()[0][:200] if text else ""
    return Untraceable(UNTRACEABLE.format(name=name, error=type(e).__name__, message=message, extra=extra), name)


def trace(name: str, fn, *args, extra: str = ""):
    """`fn(*args)`, turning JAX's tracer-conversion errors into one that names `name`."""
    try:
        return fn(*args)
    except _TRACER_ERRORS as e:
        raise untraceable(name, e, extra) from e
