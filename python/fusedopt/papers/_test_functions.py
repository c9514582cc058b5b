"""Standard two-dimensional optimization test functions for P1, with their minima.

Each entry: the function of a length-2 tensor, the usual start point and the global minimum
value f* (from the standard references of these functions; Styblinski-Tang's is negative, so a
loss gap needs the true f*, not 0). McCormick is left out: it is unbounded below outside its
usual box (f -> -inf along x = y -> -inf), and these runs are unconstrained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor


@dataclass(frozen=True)
class TestFunction:
    name: str
    fn: Callable[[Tensor], Tensor]
    start: tuple[float, float]
    f_star: float


def _rosenbrock(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _beale(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2
            + (2.625 - x + x * y ** 3) ** 2)


def _booth(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def _quadratic(p: Tensor) -> Tensor:
    """Ill-conditioned quadratic, condition number 100."""
    x, y = p[0], p[1]
    return 0.5 * (x * x + 100 * y * y)


def _matyas(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return 0.26 * (x * x + y * y) - 0.48 * x * y


def _himmelblau(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def _three_hump_camel(p: Tensor) -> Tensor:
    x, y = p[0], p[1]
    return 2 * x * x - 1.05 * x ** 4 + x ** 6 / 6 + x * y + y * y


def _styblinski_tang(p: Tensor) -> Tensor:
    return 0.5 * (p ** 4 - 16 * p ** 2 + 5 * p).sum()


FUNCTIONS = (
    TestFunction("Rosenbrock", _rosenbrock, (-1.2, 1.0), 0.0),
    TestFunction("Beale", _beale, (1.0, 1.5), 0.0),
    TestFunction("Booth", _booth, (0.0, 0.0), 0.0),
    # not (1, 1): Adam's first step moves every coordinate by exactly lr, which from (1, 1)
    # at lr 1 lands on the minimum
    TestFunction("Quadratic (cond 100)", _quadratic, (1.5, -0.7), 0.0),
    TestFunction("Matyas", _matyas, (3.0, -2.0), 0.0),
    TestFunction("Himmelblau", _himmelblau, (0.0, 0.0), 0.0),
    TestFunction("Three-hump camel", _three_hump_camel, (0.5, 0.5), 0.0),
    TestFunction("Styblinski-Tang", _styblinski_tang, (0.0, 0.0), -78.33233140754282),
)
