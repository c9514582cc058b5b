"""The unit every backend works on: the tensors of one param group that share storage dtypes."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Bucket:
    """Tensors of one param group with one (device, param dtype, grad dtype, state dtype, master).

    ``states`` maps a state name (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``sum``,
    ``momentum_buffer``) to one tensor per param, in param order. ``steps`` holds each param's
    0-d fp32 step count on the param's device. ``masters`` holds fp32 master copies for 16-bit
    params when master weights are on (the update runs on them and rounds into ``params``).

    Two dicts belong to the backend. ``tables``: what it derives from these tensor lists
    (pointer and chunk tables); the optimizer hands over the same Bucket object, ``tables``
    included, for as long as none of its tensors changed, and builds a new Bucket with empty
    ``tables`` when one did (a new grad after ``zero_grad(set_to_none=True)``, a loaded state).
    ``cache``: kept for the same (param group, dtypes) across such rebuilds, for things worth
    reusing when the tensors change (device buffers, workspaces).
    """

    params: list[Tensor]
    grads: list[Tensor]
    steps: list[Tensor]
    states: dict[str, list[Tensor]]
    masters: list[Tensor] | None = None
    cache: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def param_dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def grad_dtype(self) -> torch.dtype:
        return self.grads[0].dtype

    @property
    def state_dtype(self) -> torch.dtype | None:
        for tensors in self.states.values():
            return tensors[0].dtype
        return None

    def __len__(self) -> int:
        return len(self.params)
