"""The step modes a benchmark case runs in: what is fused into the step and in which dtypes."""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: ``max_grad_norm`` of the clipping modes (clip_grad_norm_ semantics, norm type 2).
MAX_GRAD_NORM = 1.0

#: Loss scale of the AMP modes. With 1.0, torch's ``GradScaler.unscale_`` (which rewrites the
#: grads in place) leaves the grads every contender shares unchanged, while still doing its full
#: read-check-multiply-write pass; fusedopt's ``LossScaler`` never writes the grads. The work
#: per step does not depend on the value of the scale.
LOSS_SCALE = 1.0

#: Growth interval of the scalers: larger than any run, so the scale stays ``LOSS_SCALE``.
SCALER_GROWTH_INTERVAL = 1 << 30


@dataclass(frozen=True)
class Mode:
    """One way to run a step.

    ``param_dtype`` is the storage dtype of params and grads. fusedopt keeps fp32 states for
    16-bit params (its default); torch.optim keeps states in the param dtype (its default), and
    each row of the results says which state dtype the contender used.
    """

    name: str
    doc: str
    param_dtype: torch.dtype = torch.float32
    clip: bool = False
    amp: bool = False
    telemetry: bool = False

    @property
    def max_grad_norm(self) -> float | None:
        return MAX_GRAD_NORM if self.clip else None


MODES: dict[str, Mode] = {m.name: m for m in [
    Mode("plain", "fp32 params, grads and states; no clipping, no loss scaling"),
    Mode("clip", "plain + global-norm clipping (max norm 1.0)", clip=True),
    Mode("clip_amp", "plain + clipping + dynamic loss scaling (unscale, inf/nan check, skip)",
         clip=True, amp=True),
    Mode("bf16", "bf16 params and grads; fusedopt keeps fp32 states, torch bf16 (its default)",
         param_dtype=torch.bfloat16),
    Mode("telemetry", "plain + grad/update/param norms (fusedopt only; peers run plain)",
         telemetry=True),
]}


def get(name: str) -> Mode:
    """The mode called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; known: {', '.join(MODES)}") from None
