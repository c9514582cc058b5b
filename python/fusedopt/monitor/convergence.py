"""``ConvergenceMonitor``: telemetry of every step into device statistics, read on request."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .plateau import PlateauDetector, PlateauRule
from .record import COL, COLUMNS, DEVICE_COLUMNS, STAT_KEYS, WINDOW_START, RowBuffer
from .sinks import CsvSink, ScalarWriter, TensorBoardSink

_TINY = torch.finfo(torch.float64).tiny
_CSV = {name: i for i, name in enumerate(COLUMNS)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class PlateauEvent:
    """One firing of the monitor, as the ``on_plateau`` callback receives it.

    ``step`` is the monitor step at the end of the window that fired; ``lr`` the lr of param
    group 0 at that step; the two means are the window's loss and update-ratio means.
    """

    step: int
    lr: float
    loss_window_mean: float
    update_ratio_window_mean: float


class ConvergenceMonitor:
    """Watches a fusedopt optimizer for P4's noise floor, without host syncs in the step path.

    Call :meth:`step` with the loss after every ``optimizer.step()`` (and before the
    scheduler's ``step()``, so that the logged lr is the one the step used). It reads
    ``optimizer.last_stats`` (device tensors), appends a row to a device buffer and updates the
    plateau statistics on the device (rule: :mod:`fusedopt.monitor.plateau`). Nothing is read
    on the host until a poll: every ``poll_every`` steps, or when you call :meth:`poll` or
    :meth:`close`. A poll copies the buffered rows to the host in one transfer, writes them to
    the CSV file and TensorBoard, and calls ``on_plateau(event)`` for every firing since the
    last poll, e.g. to decay the lr with :func:`fusedopt.schedules.scale_lr_`.

    Args:
        optimizer: a fusedopt optimizer built with ``telemetry=True``.
        csv: path of the CSV log (columns :data:`fusedopt.monitor.record.COLUMNS`), or None.
        tensorboard: a log directory (needs ``tensorboard``) or a ``SummaryWriter``-like
            object, or None.
        on_plateau: called on the host, at poll time, once per firing.
        window, batches, patience, rtol, z, lr_rtol: the plateau rule
            (:class:`~fusedopt.monitor.plateau.PlateauRule`).
        poll_every: steps between automatic polls (each is one host sync); None polls at the
            end of every window, 0 only when :meth:`poll` or :meth:`close` is called.
        log_every: log every n-th step (window ends are always logged; the statistics use
            every step either way).

    The ``lr`` column and the constant-lr test use param group 0 (schedulers move all groups
    together). Skipped steps (``found_inf``) are logged but left out of the statistics.
    """

    def __init__(self, optimizer: Optimizer, *, csv: str | os.PathLike | None = None,
                 tensorboard: str | os.PathLike | ScalarWriter | None = None,
                 on_plateau: Callable[[PlateauEvent], Any] | None = None,
                 window: int = 500, batches: int = 10, patience: int = 3, rtol: float = 0.01,
                 z: float = 2.0, lr_rtol: float = 1e-3, poll_every: int | None = None,
                 log_every: int = 1) -> None:
        if not getattr(optimizer, "telemetry", False):
            raise ValueError("ConvergenceMonitor needs a fusedopt optimizer built with "
                             "telemetry=True (it reads optimizer.last_stats)")
        if poll_every is not None and not (_is_int(poll_every) and poll_every >= 0):
            raise ValueError(f"ConvergenceMonitor: poll_every must be None or an int >= 0, "
                             f"got {poll_every!r}")
        if not (_is_int(log_every) and log_every >= 1):
            raise ValueError(f"ConvergenceMonitor: log_every must be an int >= 1, "
                             f"got {log_every!r}")
        self.optimizer = optimizer
        self.rule = PlateauRule(window=window, batches=batches, patience=patience, rtol=rtol,
                                z=z, lr_rtol=lr_rtol)
        self.on_plateau = on_plateau
        self.poll_every = window if poll_every is None else poll_every
        self.log_every = log_every
        self.steps = 0
        #: every firing read so far, in order
        self.events: list[PlateauEvent] = []
        device = optimizer.last_stats["update_norm"].device
        self.device = device
        self._detector = PlateauDetector(self.rule, device)
        capacity = -(-(self.poll_every or window) // log_every) + 1
        self._rows = RowBuffer(capacity, device)
        #: the row of a step that is not logged (window ends always are, so only the
        #: per-step columns of it are ever written)
        self._scratch = torch.empty(len(DEVICE_COLUMNS), dtype=torch.float64, device=device)
        self._lr_value = torch.zeros((), dtype=torch.float64, device=device)
        self._loss_value = torch.zeros((), dtype=torch.float64, device=device)
        self._sinks: list[CsvSink | TensorBoardSink] = []
        if csv is not None:
            self._sinks.append(CsvSink(csv))
        if tensorboard is not None:
            self._sinks.append(TensorBoardSink(tensorboard))

    # ------------------------------------------------------------------ step path (no sync)
    def _as_device_scalar(self, value: Tensor | float, scratch: Tensor, what: str) -> Tensor:
        """A 0-d tensor on the monitor's device; a Python number is written with ``fill_``."""
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"ConvergenceMonitor: {what} must have one element, "
                                 f"got shape {tuple(value.shape)}")
            value = value.detach().reshape(())
            return value if value.device == self.device else value.to(self.device)
        return scratch.fill_(float(value))

    @torch.no_grad()
    def step(self, loss: Tensor | float) -> list[PlateauEvent]:
        """Record the step the optimizer just took; ``loss`` is its loss (a tensor: no sync).

        Returns the events of the automatic poll when this step triggers one, else ``[]``.
        """
        stats = self.optimizer.last_stats
        self.steps += 1
        lr = self._as_device_scalar(self.optimizer.param_groups[0]["lr"], self._lr_value, "lr")
        loss = self._as_device_scalar(loss, self._loss_value, "loss")
        window_end = self.steps % self.rule.window == 0
        logged = window_end or self.steps % self.log_every == 0
        row = self._rows.next_row(self.steps) if logged else self._scratch
        torch.stack([lr, loss] + [stats[k] for k in STAT_KEYS], out=row[:len(STAT_KEYS) + 2])
        torch.div(row[COL["update_norm"]], row[COL["param_norm"]].clamp_min(_TINY),
                  out=row[COL["update_ratio"]])
        summary = self._detector.observe(row[COL["loss"]], row[COL["update_ratio"]],
                                         row[COL["lr"]], row[COL["found_inf"]])
        if summary is not None:
            row[WINDOW_START:].copy_(summary)
        if self.poll_every and self.steps % self.poll_every == 0:
            return self.poll()
        return []

    # ------------------------------------------------------------------ host side
    def poll(self) -> list[PlateauEvent]:
        """Read the buffered rows on the host (one sync), log them, fire the callbacks.

        Returns the firings found in these rows (also appended to :attr:`events`).
        """
        rows = self._rows.drain()
        for sink in self._sinks:
            sink.write(rows)
        fired = [r for r in rows if r[_CSV["fired"]] == 1.0]
        events = [PlateauEvent(step=int(r[_CSV["step"]]), lr=r[_CSV["lr"]],
                               loss_window_mean=r[_CSV["loss_window_mean"]],
                               update_ratio_window_mean=r[_CSV["update_ratio_window_mean"]])
                  for r in fired]
        self.events.extend(events)
        if self.on_plateau is not None:
            for event in events:
                self.on_plateau(event)
        return events

    @property
    def fired_steps(self) -> list[int]:
        """Steps at which the monitor fired, as read by the polls so far."""
        return [e.step for e in self.events]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to go on exactly as an uninterrupted one would.

        Polls first (one host sync, as every checkpoint makes anyway), so the log holds every
        step up to the checkpoint and no buffered row is lost with the process. Returns the
        monitor step count, the rule, the plateau statistics (device tensors) and the events
        read so far; save it with the optimizer's state, e.g. with ``torch.save``.
        """
        self.poll()
        return {"steps": self.steps, "rule": dataclasses.asdict(self.rule),
                "detector": self._detector.state_dict(),
                "events": [dataclasses.asdict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` on a monitor that has not recorded a step yet.

        The monitor must be built with the same plateau rule (window, batches, patience,
        thresholds) as the saved one; its sinks are its own (point ``csv`` at a new file or
        open the old one for appending yourself). The callback is not re-run for the saved
        events. Raises ``ValueError`` and changes nothing when the state does not fit.
        """
        if self.steps != 0:  # rows are only buffered by step()
            raise ValueError("ConvergenceMonitor.load_state_dict: load into a new monitor, "
                             f"before its first step (this one has recorded {self.steps})")
        rule = state.get("rule")
        if rule != dataclasses.asdict(self.rule):
            raise ValueError(f"ConvergenceMonitor.load_state_dict: the saved rule {rule} is "
                             f"not this monitor's {dataclasses.asdict(self.rule)}")
        steps, detector = state.get("steps"), state.get("detector")
        if not isinstance(detector, dict) or detector.get("steps") != steps:
            raise ValueError("ConvergenceMonitor.load_state_dict: steps and detector.steps "
                             "must be present and equal")
        try:
            events = [PlateauEvent(**e) for e in state.get("events", [])]
        except TypeError as exc:
            raise ValueError(f"ConvergenceMonitor.load_state_dict: bad events: {exc}") from None
        self._detector.load_state_dict(detector)  # validates everything before writing
        self.steps = steps
        self.events = events

    def close(self) -> list[PlateauEvent]:
        """Poll what is left and close the CSV file and the TensorBoard writer."""
        events = self.poll()
        for sink in self._sinks:
            sink.close()
        self._sinks = []
        return events

    def __enter__(self) -> ConvergenceMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
