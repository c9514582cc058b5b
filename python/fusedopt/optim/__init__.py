"""fusedopt optimizers: torch.optim.Optimizer subclasses, one file per algorithm."""
from ._base import FusedOptimizer
from .adagrad import Adagrad
from .adamd import AdamD
from .adaml import AdamL
from .adamw import Adam, AdamW
from .iansgd import IANSGD, NSGD, ClipSGD, NSGDm

__all__ = ["FusedOptimizer", "Adam", "AdamW", "AdamD", "AdamL", "Adagrad", "IANSGD", "NSGD",
           "NSGDm", "ClipSGD"]
