"""Type aliases shared by the package."""

from typing import Any, TypeAlias

import jax.core

PyTree: TypeAlias = Any
"""Any JAX pytree: nested tuples, lists, dicts, dataclasses, with arrays at the leaves."""

Array: TypeAlias = Any
"""An array of NumPy (a check on concrete inputs computes on the host) or of JAX (under a
trace): the verdict, noise and result code is written once for both (`xp`)."""

Tracer = jax.core.Tracer  # pyright: ignore[reportAttributeAccessIssue]
"""A traced value (of the caller's jit/vmap, or of jgc's own programs)."""
