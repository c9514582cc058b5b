"""AdamL's global scalars (docs/algorithms.md#adaml), computed on the device from the loss.

The kernel contract (certain): AdamL is Adam with three device scalars ``a, b, c`` per step,
``v <- beta2 v + (1 - beta2) g^2 + a`` and ``p <- p - lr c / bc1 * m / (sqrt(v / bc2) + b)``;
Adam is ``(0, eps, 1)``, EAdam ``(eps, 0, 1)``.

The scaling below is **fusedopt's reading** of Xia & Massei 2023 (arXiv 2312.15295), NOT its
verified formula: the paper's algorithm box could not be read, only its abstract. What is known
and satisfied: the step depends on the loss gap ``l = f(x) - f*``; a large gap gives bold steps,
a small gap cautious ones; f* is given or estimated on the fly; no manual LR decay is needed.

    Lbar_t = bias-corrected EMA of the passed loss (beta_L = 0.9)
    f*_t   = f_star if given, else b_t - rho |b_t|, b_t = min_{s <= t} Lbar_s  (rho = 0.1)
             (not (1 - rho) b_t: the same for b_t >= 0, but for a negative best loss that would
             lie above it, against the rule "never above the best loss")
    l_t    = max(Lbar_t - f*_t, 1e-12)
    "gap":      c = clamp((l_t / l_1)^gamma, c_min, 1),  a = 0,  b = eps     (gamma 0.5, c_min 1e-3)
    "additive": a = eps_l * l_t^gamma,  b = 0,  c = 1                        (gamma = 0: EAdam)

All state is one-element fp64 device tensors; a non-finite loss leaves it unchanged (the step is skipped).
"""
from __future__ import annotations

import torch
from torch import Tensor

LOSS_EMA_BETA = 0.9
AUTO_FSTAR_MARGIN = 0.1
TINY_GAP = 1e-12
SCALINGS = ("gap", "additive")


def init_adaml_state(device) -> dict[str, Tensor]:
    """Fresh AdamL global state: loss EMA, EMA count, best smoothed loss, first gap."""
    # shape (1,), not 0-d: torch 2.13's inductor drops in-place updates of 0-d fp64 tensors
    z = lambda v: torch.full((1,), v, dtype=torch.float64, device=device)  # noqa: E731
    return {"loss_ema": z(0.0), "count": z(0.0), "best": z(float("inf")), "gap0": z(0.0)}


def advance_adaml_state(
    state: dict[str, Tensor], loss: Tensor, *, f_star: float | None,
    found_inf: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Advance the AdamL state with ``loss``; return fp64 ``(gap l_t, first gap l_1, loss_ok)``
    (one-element tensors).

    ``loss_ok`` is a 0-d bool; when it is False, or when ``found_inf`` (the grads' non-finite
    flag) is set, the state is left as it was and the caller skips the step. ``state`` is
    updated in place (no host sync).
    """
    loss64 = loss.detach().to(torch.float64).reshape(1)
    ok = torch.isfinite(loss64)
    safe_loss = torch.where(ok, loss64, torch.zeros_like(loss64))
    count = state["count"] + 1.0
    ema = state["loss_ema"] * LOSS_EMA_BETA + safe_loss * (1.0 - LOSS_EMA_BETA)
    smoothed = ema / (1.0 - torch.pow(torch.full_like(count, LOSS_EMA_BETA), count))
    best = torch.minimum(state["best"], smoothed)
    if f_star is None:  # below the best smoothed loss by 10% of its size, whatever its sign
        fstar = best - AUTO_FSTAR_MARGIN * torch.abs(best)
    else:
        fstar = torch.full_like(best, f_star)
    gap = torch.clamp(smoothed - fstar, min=TINY_GAP)
    gap0 = torch.where(state["count"] == 0, gap, state["gap0"])
    commit = ok if found_inf is None else ok & ~(found_inf != 0)
    for key, new in (("count", count), ("loss_ema", ema), ("best", best), ("gap0", gap0)):
        state[key].copy_(torch.where(commit, new, state[key]))
    return gap, gap0, ok


def adaml_abc(gap: Tensor, gap0: Tensor, *, scaling: str, gamma: float, eps: float,
              c_min: float = 1e-3) -> Tensor:
    """fp64 ``[a, b, c]`` (shape (3,)) of one param group (its ``eps``) from the gaps."""
    zero = torch.zeros_like(gap)
    if scaling == "gap":
        c = torch.clamp(torch.pow(gap / gap0, gamma), min=c_min, max=1.0)
        return torch.cat([zero, torch.full_like(gap, eps), c]).reshape(3)
    if scaling == "additive":
        return torch.cat([eps * torch.pow(gap, gamma), zero, torch.ones_like(gap)]).reshape(3)
    raise ValueError(f"AdamL scaling must be one of {SCALINGS}, got {scaling!r}")
