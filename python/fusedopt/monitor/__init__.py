"""Convergence monitor: telemetry of every step, P4's noise floor flagged, CSV/TensorBoard/PNG.

P4 (docs/algorithms.md#schedules) proves that Adam and RMSprop with a learning rate bounded away
from zero never settle; its practical advice is to use an lr schedule and to watch training.
fusedopt's optimizers compute the norms that show the noise floor inside the fused step
(``telemetry=True``); :class:`ConvergenceMonitor` turns them into a log and a flag::

    opt = fusedopt.AdamW(model.parameters(), lr=torch.tensor(3e-4, device="cuda"),
                         capturable=True, telemetry=True)
    monitor = ConvergenceMonitor(opt, csv="run.csv",
                                 on_plateau=lambda e: fusedopt.schedules.scale_lr_(opt, 0.5))
    for batch in data:
        loss = model(batch).loss
        loss.backward(); opt.step(); opt.zero_grad()
        monitor.step(loss)          # device ops only; host reads once per window
    monitor.close()

and ``python -m fusedopt.monitor plot run.csv -o run.png`` draws the log. The rule that decides
a plateau is in :mod:`fusedopt.monitor.plateau`.
"""
from .convergence import ConvergenceMonitor, PlateauEvent
from .plateau import PlateauDetector, PlateauRule
from .record import COLUMNS

__all__ = ["ConvergenceMonitor", "PlateauEvent", "PlateauRule", "PlateauDetector", "COLUMNS"]
