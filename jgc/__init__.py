"""jgc: a gradient checker for JAX."""

import importlib.metadata

from ._check import assert_grad as assert_grad
from ._check import check_grad as check_grad
from ._check import numeric_grad as numeric_grad
from ._check import relative_error as relative_error
from ._hvp import check_hvp as check_hvp
from ._layers import check_jvp as check_jvp
from ._layers import check_vjp as check_vjp
from ._report import Coordinate as Coordinate
from ._result import GradCheck as GradCheck
from ._result import GradCheckError as GradCheckError

try:
    __version__ = importlib.metadata.version("jgc")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Coordinate",
    "GradCheck",
    "GradCheckError",
    "assert_grad",
    "check_grad",
    "check_hvp",
    "check_jvp",
    "check_vjp",
    "numeric_grad",
    "relative_error",
]
