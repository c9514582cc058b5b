"""fusedopt: fused multi-tensor optimizers for PyTorch.

The whole optimizer step — AMP unscale and inf/nan check, global-norm clipping, the update,
decoupled decay and optional telemetry — runs as one pass over memory (plus one norm pass when a
global norm is needed) in CUDA C++, Triton or vectorized C++, checked against one pure-PyTorch
reference (:mod:`fusedopt.reference`).
"""
from . import amp, backends, monitor, optim, reference, schedules
from .backends import available_backends
from .monitor import ConvergenceMonitor
# every optimizer class (fusedopt.optim.__all__): a new algorithm is exported there only
from .optim import *  # noqa: F401,F403

__version__ = "0.1.0"

__all__ = [*optim.__all__, "ConvergenceMonitor", "amp", "backends", "monitor", "optim",
           "reference", "schedules", "available_backends", "__version__"]
