"""Where polled rows go: a CSV file and, optionally, TensorBoard. Host-side only."""
from __future__ import annotations

import csv
import math
import os
from typing import Any, Protocol, Sequence

from .record import COLUMNS


class ScalarWriter(Protocol):
    """The part of ``torch.utils.tensorboard.SummaryWriter`` the monitor uses."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> Any: ...
    def flush(self) -> Any: ...
    def close(self) -> Any: ...


def _cell(value: float) -> str:
    """NaN (a column without a value at this step) becomes an empty cell."""
    if math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)


class CsvSink:
    """Writes the header of :data:`COLUMNS` once, then one line per row; flushed every poll."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)

    def write(self, rows: Sequence[tuple[float, ...]]) -> None:
        self._writer.writerows([_cell(v) for v in row] for row in rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Scalars ``monitor/<column>`` at ``global_step = step``; empty cells are not written.

    ``target``: a log directory (a ``SummaryWriter`` is created there; needs the
    ``tensorboard`` package) or any object with ``add_scalar``/``flush``/``close``.
    """

    def __init__(self, target: str | os.PathLike | ScalarWriter) -> None:
        if isinstance(target, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("ConvergenceMonitor(tensorboard=<dir>) needs the tensorboard "
                                  "package: pip install tensorboard") from exc
            self._writer: ScalarWriter = SummaryWriter(log_dir=os.fspath(target))
        else:
            self._writer = target

    def write(self, rows: Sequence[tuple[float, ...]]) -> None:
        for row in rows:
            step = int(row[0])
            for name, value in zip(COLUMNS[1:], row[1:]):
                if not math.isnan(value):
                    self._writer.add_scalar(f"monitor/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
