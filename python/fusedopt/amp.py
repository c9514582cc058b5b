"""Mixed precision: ``LossScaler``, a dynamic loss scale that never leaves the device.

``torch.amp.GradScaler`` works with every fusedopt optimizer (they declare
``_step_supports_amp_scaling`` and consume ``grad_scale``/``found_inf`` inside the kernel). It
still pays one extra read of every grad for its inf check. ``LossScaler`` folds that check into
the fused norm pass and updates the scale on the device, so a step is two passes and no sync::

    scaler = fusedopt.amp.LossScaler()
    scaler.scale(loss).backward()
    scaler.step(opt)        # unscale + inf/nan check + (clip) + update, skipped on inf
    scaler.update()         # scale *= backoff on inf, *= growth after growth_interval good steps
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _stats as S


class LossScaler:
    """Dynamic loss scaling with the scale, growth tracker and skip decision on the device.

    Args:
        init_scale: initial scale (2**16). growth_factor / backoff_factor: as GradScaler.
        growth_interval: good steps between growths (2000). device: where the scale lives
            (default: the device of the first optimizer stepped; "cpu" before that).
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000,
                 device: torch.device | str | None = None) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1
                and growth_interval >= 1):
            raise ValueError("LossScaler: need init_scale > 0, growth_factor > 1, "
                             "0 < backoff_factor < 1, growth_interval >= 1")
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.scale_tensor = torch.full((), float(init_scale), dtype=torch.float32, device=dev)
        self._growth_tracker = torch.zeros((), dtype=torch.int32, device=dev)
        self._found_inf: Tensor | None = None

    def _to(self, device: torch.device) -> None:
        if self.scale_tensor.device != device:
            self.scale_tensor = self.scale_tensor.to(device)
            self._growth_tracker = self._growth_tracker.to(device)

    def scale(self, loss: Tensor) -> Tensor:
        """``loss * scale`` (a device multiply; no sync)."""
        self._to(loss.device)
        return loss * self.scale_tensor.to(loss.dtype)

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``optimizer.step`` with the scale handed to its fused prologue.

        The prologue divides every grad by the scale in registers, checks for inf/nan on the
        same pass and, when one is found, skips the step on the device. Returns step's value.
        """
        self._to(optimizer._device)
        optimizer._loss_scaler = self
        try:
            out = optimizer.step(*args, **kwargs)
        finally:
            optimizer._loss_scaler = None
        self._found_inf = optimizer._stats[S.FOUND_INF].to(torch.float32)
        return out

    def update(self) -> None:
        """Back off on a skipped step, grow after ``growth_interval`` good ones (on the device)."""
        if self._found_inf is None:
            return
        torch._amp_update_scale_(self.scale_tensor, self._growth_tracker, self._found_inf,
                                 self.growth_factor, self.backoff_factor, self.growth_interval)
        self._found_inf = None

    def get_scale(self) -> Tensor:
        """The current scale as a 0-d device tensor (read it on the host only when you need to)."""
        return self.scale_tensor

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale_tensor.clone(), "growth_tracker": self._growth_tracker.clone(),
                "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale_tensor.copy_(state["scale"])
        self._growth_tracker.copy_(state["growth_tracker"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
