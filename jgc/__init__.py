"""jgc: a gradient checker for JAX."""

import importlib.metadata

from ._adjoint import AdjointCheck as AdjointCheck
from ._adjoint import check_adjoint as check_adjoint
from ._check import assert_grad as assert_grad
from ._check import check_grad as check_grad
from ._check import numeric_grad as numeric_grad
from ._check import relative_error as relative_error
from ._course import check_layer as check_layer
from ._course import course as course
from ._directions import check_directions as check_directions
from ._hvp import check_hvp as check_hvp
from ._layers import check_jvp as check_jvp
from ._layers import check_vjp as check_vjp
from ._locate import Location as Location
from ._locate import locate as locate
from ._report import Coordinate as Coordinate
from ._result import Autodiff as Autodiff
from ._result import Diagnosis as Diagnosis
from ._result import DirectionCheck as DirectionCheck
from ._result import GradCheck as GradCheck
from ._result import GradCheckError as GradCheckError
from ._result import HVPCheck as HVPCheck
from ._result import JVPCheck as JVPCheck
from ._result import LayerCheck as LayerCheck
from ._result import Noise as Noise
from ._result import Run as Run
from ._result import SampledCheck as SampledCheck
from ._result import VJPCheck as VJPCheck
from ._rules import RuleCheck as RuleCheck
from ._rules import check_rule as check_rule
from ._seeds import check_seeds as check_seeds
from ._seeds import check_snapshots as check_snapshots
from ._taylor import TaylorTest as TaylorTest
from ._taylor import taylor_test as taylor_test

try:
    __version__ = importlib.metadata.version("jgc")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AdjointCheck",
    "Autodiff",
    "Coordinate",
    "Diagnosis",
    "DirectionCheck",
    "GradCheck",
    "GradCheckError",
    "HVPCheck",
    "JVPCheck",
    "LayerCheck",
    "Location",
    "Noise",
    "RuleCheck",
    "Run",
    "SampledCheck",
    "TaylorTest",
    "VJPCheck",
    "assert_grad",
    "check_adjoint",
    "check_directions",
    "check_grad",
    "check_hvp",
    "check_jvp",
    "check_layer",
    "check_rule",
    "check_vjp",
    "check_seeds",
    "check_snapshots",
    "course",
    "locate",
    "numeric_grad",
    "relative_error",
    "taylor_test",
]
