"""What the monitor records per step, and the device buffer the rows wait in until a poll.

One row per logged step. The device part of a row is written with torch ops (no host sync);
the host reads the whole buffer in one transfer when the monitor polls.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: Columns of the CSV (and the TensorBoard tags), in order. ``step`` counts monitor steps
#: from 1. ``update_ratio = update_norm / param_norm`` (the norm floored at the smallest normal
#: fp64, so a skipped step, where the optimizer reports 0 for both, gives 0; such steps have
#: ``found_inf = 1`` and stay out of the statistics). The last four are written only at the
#: end of a plateau window (empty elsewhere): the window means of the loss and of the update
#: ratio, 1 if the window is a plateau window, 1 if the monitor fired there.
COLUMNS = ("step", "lr", "loss", "grad_norm", "clip_coef", "update_norm", "param_norm",
           "update_ratio", "found_inf", "loss_window_mean", "update_ratio_window_mean",
           "plateau", "fired")

#: Device columns (every column but ``step``, which the host knows), in buffer order.
DEVICE_COLUMNS = ("lr", "loss", "grad_norm", "clip_coef", "update_norm", "param_norm",
                  "found_inf", "update_ratio", "loss_window_mean", "update_ratio_window_mean",
                  "plateau", "fired")
COL = {name: i for i, name in enumerate(DEVICE_COLUMNS)}
#: the ``last_stats`` keys copied into a row, in buffer order after lr and loss
STAT_KEYS = ("grad_norm", "clip_coef", "update_norm", "param_norm", "found_inf")
WINDOW_START = COL["loss_window_mean"]
#: for each column of COLUMNS after ``step``, its index in the device row
_HOST_ORDER = tuple(COL[c] for c in COLUMNS[1:])


class RowBuffer:
    """A fp64 device matrix of rows; it doubles when full (a device copy, no host sync)."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.device = torch.device(device)
        self.data = torch.full((max(1, capacity), len(DEVICE_COLUMNS)), math.nan,
                               dtype=torch.float64, device=self.device)
        self.steps: list[int] = []

    def __len__(self) -> int:
        return len(self.steps)

    def next_row(self, step: int) -> Tensor:
        """Reserve the row of ``step`` (NaN-filled) and return it as a view to write into."""
        n = len(self.steps)
        if n == self.data.shape[0]:
            grown = torch.full_like(self.data, math.nan)
            self.data = torch.cat([self.data, grown])
        self.steps.append(step)
        return self.data[n]

    def drain(self) -> list[tuple[float, ...]]:
        """All rows as host tuples in :data:`COLUMNS` order (one device-to-host copy); empties."""
        n = len(self.steps)
        host = self.data[:n].cpu().tolist() if n else []
        rows = [(float(s),) + tuple(r[i] for i in _HOST_ORDER) for s, r in zip(self.steps, host)]
        self.data[:n].fill_(math.nan)
        self.steps = []
        return rows
