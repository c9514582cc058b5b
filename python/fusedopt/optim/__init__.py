"""fusedopt optimizers: torch.optim.Optimizer subclasses, one file per algorithm."""
from ._base import FusedOptimizer
from .adagrad import Adagrad
from .adamd import AdamD
from .adaml import AdamL
from .adamw import Adam, AdamW
from .adan import Adan
from .adopt import ADOPT
from .iansgd import IANSGD, NSGD, ClipSGD, NSGDm
from .lion import Lion
from .schedule_free_adamw import ScheduleFreeAdamW

__all__ = ["FusedOptimizer", "Adam", "AdamW", "AdamD", "AdamL", "Adagrad", "IANSGD", "NSGD",
           "NSGDm", "ClipSGD", "Lion", "Adan", "ScheduleFreeAdamW", "ADOPT"]
