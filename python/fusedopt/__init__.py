"""fusedopt: fused multi-tensor optimizers for PyTorch.

The whole optimizer step — AMP unscale and inf/nan check, global-norm clipping, the update,
decoupled decay and optional telemetry — runs as one pass over memory (plus one norm pass when a
global norm is needed) in CUDA C++, Triton or vectorized C++, checked against one pure-PyTorch
reference (:mod:`fusedopt.reference`).
"""
from . import amp, backends, monitor, reference, schedules
from .backends import available_backends
from .monitor import ConvergenceMonitor
from .optim import (IANSGD, NSGD, Adagrad, Adam, AdamD, AdamL, Adan, AdamW, ClipSGD,
                    FusedOptimizer, Lion, NSGDm, ScheduleFreeAdamW)

__version__ = "0.1.0"

__all__ = ["Adam", "AdamW", "AdamD", "AdamL", "Adagrad", "IANSGD", "NSGD", "NSGDm", "ClipSGD",
           "Lion", "Adan", "ScheduleFreeAdamW", "FusedOptimizer", "ConvergenceMonitor", "amp",
           "backends", "monitor", "reference", "schedules", "available_backends", "__version__"]
