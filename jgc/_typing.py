"""Type aliases shared by the package."""

from typing import Any, TypeAlias

PyTree: TypeAlias = Any
"""Any JAX pytree: nested tuples, lists, dicts, dataclasses, with arrays at the leaves."""
