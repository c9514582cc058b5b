"""The plateau rule of the convergence monitor, evaluated on the device (no host sync).

What it looks for (P4, docs/algorithms.md#schedules): with a learning rate bounded away from zero,
Adam and RMSprop do not converge; they reach a noise floor where the loss has stopped improving and
the relative update size ``r = ||p_new - p_old|| / ||p_new||`` has stopped shrinking, but the
parameters keep moving. Only a smaller lr gets them closer.

The rule (all thresholds in :class:`PlateauRule`):

* Steps are grouped into windows of ``window`` steps, each split into ``batches`` equal
  sub-batches. Steps that were skipped (``found_inf``) or have a non-finite loss or ``r`` are
  left out of every statistic.
* For the loss and for ``r``, a window's value is the mean of its sub-batch means and its
  standard error is ``std(sub-batch means) / sqrt(#sub-batches)`` (the batch-means method).
  Not the per-step spread, because consecutive steps are correlated: on P4's quadratic (Adam,
  lr 1e-2, after the descent; measured with ``run_p4_quadratic``) ``r`` has autocorrelation
  0.81 at lag 1 and 0.14 at lag 10, and the means of 500-step windows scatter by 12% of their
  value where an i.i.d. standard error predicts 4%, so a per-step error bar would call noise a
  trend. Means of 50-step sub-batches (the default 500 / 10) are close to independent.
* A quantity is **still decreasing** from window k-1 to k when its mean dropped by more than
  ``max(rtol * |mean_{k-1}|, z * sqrt(se_{k-1}^2 + se_k^2))``: a real drop, larger than noise.
  An increase never counts as decreasing.
* Window k is a **plateau window** when, compared with window k-1, neither the loss nor ``r``
  is still decreasing, the lr was constant over both windows (``max - min <= lr_rtol * max``
  over the lr of every step of the two windows) and both windows have at least half of their
  sub-batches (and at least 2) with a valid step.
* The monitor **fires** at the end of the ``patience``-th consecutive plateau window; the count
  then restarts, so at an unchanged lr it fires again every ``patience`` windows.

The earliest possible firing step is therefore ``(patience + 1) * window`` (window 1 has no
predecessor). A schedule that keeps lowering the lr never fires (the lr is not constant), which
is the point: P4's cure is the schedule. The constant-lr condition carries weight: with it
switched off (``lr_rtol=inf``) the rule still ignores a fast decay (lr halved every two
windows), but a slow one moves ``r`` by less than its noise per window; on P4's quadratic
(6,000 steps, seed 0, default rule) cosine decay over the run then fires at step 2500 and
inverse-sqrt decay at 2500, 4000 and 5500, while with the condition on neither ever fires.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Order of the window summary returned by :meth:`PlateauDetector.observe`.
SUMMARY = ("loss_window_mean", "update_ratio_window_mean", "plateau", "fired")


@dataclass(frozen=True)
class PlateauRule:
    """Thresholds of the plateau rule (see the module docstring for the rule itself).

    Args:
        window: steps per window (a multiple of ``batches``).
        batches: sub-batches per window (>= 2) whose means give the noise estimate.
        patience: consecutive plateau windows before the monitor fires (>= 1).
        rtol: minimum relative drop of a window mean that counts as progress.
        z: minimum drop in standard errors that counts as progress (noise guard).
        lr_rtol: the lr is "constant" when its range over two windows is <= lr_rtol * max.
    """

    window: int = 500
    batches: int = 10
    patience: int = 3
    rtol: float = 0.01
    z: float = 2.0
    lr_rtol: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("window", "batches", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PlateauRule: {name} must be a positive int, got {v!r}")
        if self.batches < 2 or self.window % self.batches != 0:
            raise ValueError(f"PlateauRule: batches must be >= 2 and divide window, got "
                             f"window={self.window}, batches={self.batches}")
        for name in ("rtol", "z", "lr_rtol"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) or v < 0:
                raise ValueError(f"PlateauRule: {name} must be a float >= 0, got {v!r}")

    @property
    def batch_len(self) -> int:
        """Steps per sub-batch."""
        return self.window // self.batches

    @property
    def min_batches(self) -> int:
        """Sub-batches with a valid step a window needs to be judged."""
        return max(2, math.ceil(self.batches / 2))


class PlateauDetector:
    """Running statistics of the rule as fp64 device tensors, updated with torch ops only.

    ``observe`` is called once per optimizer step; it launches a handful of small kernels and
    never reads a device value on the host. Window boundaries are known on the host from the
    step count, so the per-window work runs only there.
    """

    def __init__(self, rule: PlateauRule, device: torch.device) -> None:
        self.rule = rule
        self.device = torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.steps = 0
        #: (valid steps, sum of loss, sum of r) of the current sub-batch
        self._sub = torch.zeros(3, **f64)
        #: sub-batch means of (loss, r) in the current window; NaN for an empty sub-batch
        self._means = torch.full((2, rule.batches), math.nan, **f64)
        #: (-min lr, max lr) of the current window, so one ``maximum`` updates both
        self._lr_range = torch.full((2,), -math.inf, **f64)
        self._lr_sign = torch.tensor([-1.0, 1.0], **f64)
        self._one = torch.ones((), **f64)
        #: previous window: means (2), squared standard errors (2), lr range (2)
        self._prev_mean = torch.full((2,), math.nan, **f64)
        self._prev_se2 = torch.full((2,), math.nan, **f64)
        self._prev_lr = torch.full((2,), -math.inf, **f64)
        self._prev_ok = torch.zeros((), dtype=torch.bool, device=self.device)
        self._streak = torch.zeros((), **f64)

    def observe(self, loss: Tensor, ratio: Tensor, lr: Tensor, skipped: Tensor) -> Tensor | None:
        """Add one step (0-d fp64 device tensors). Returns the window summary at a window's end.

        The summary is a fp64 device tensor ordered as :data:`SUMMARY`: the window means of
        the loss and of ``r``, 1.0 if the window is a plateau window, 1.0 if the monitor fires.
        """
        vals = torch.stack([self._one, loss, ratio])  # (count, loss, r) for the sub-batch sums
        # one comparison decides validity: x - x is 0 for a finite x and NaN otherwise, and
        # adding the skip flag (0 or 1) makes a skipped step non-zero too
        valid = ((vals - vals).sum() + skipped) == 0
        self._sub += torch.where(valid, vals, 0.0)
        torch.maximum(self._lr_range, lr * self._lr_sign, out=self._lr_range)
        self.steps += 1
        rule = self.rule
        if self.steps % rule.batch_len == 0:
            b = (self.steps // rule.batch_len - 1) % rule.batches
            self._means[:, b] = self._sub[1:] / self._sub[0]  # 0/0 = NaN marks an empty batch
            self._sub.zero_()
        if self.steps % rule.window == 0:
            return self._close_window()
        return None

    #: the device tensors that carry the rule's running statistics between steps
    _STATE = ("_sub", "_means", "_lr_range", "_prev_mean", "_prev_se2", "_prev_lr", "_prev_ok",
              "_streak")

    def state_dict(self) -> dict[str, Any]:
        """The running statistics (copies of the device tensors) and the step count."""
        state: dict[str, Any] = {"steps": self.steps}
        state.update({name.lstrip("_"): getattr(self, name).clone() for name in self._STATE})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (from any device). Every entry is checked
        before anything is written, so a bad state leaves the detector as it was."""
        steps = state.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"PlateauDetector.load_state_dict: steps must be an int >= 0, "
                             f"got {steps!r}")
        for name in self._STATE:
            mine, theirs = getattr(self, name), state.get(name.lstrip("_"))
            if not isinstance(theirs, Tensor) or theirs.shape != mine.shape \
                    or theirs.dtype != mine.dtype:
                raise ValueError(
                    f"PlateauDetector.load_state_dict: {name.lstrip('_')} must be a "
                    f"{mine.dtype} tensor of shape {tuple(mine.shape)} (a state saved with the "
                    f"same PlateauRule), got {theirs!r:.80}")
        for name in self._STATE:
            getattr(self, name).copy_(state[name.lstrip("_")])
        self.steps = steps

    def _close_window(self) -> Tensor:
        rule = self.rule
        m = self._means
        count = (~torch.isnan(m[0])).sum().to(torch.float64)
        mean = torch.nanmean(m, dim=1)
        var = torch.nansum((m - mean[:, None]) ** 2, dim=1) / (count - 1)
        se2 = var / count
        ok = count >= rule.min_batches
        # "still decreasing": a drop beyond both the relative tolerance and z standard errors
        drop = self._prev_mean - mean
        threshold = torch.maximum(rule.rtol * self._prev_mean.abs(),
                                  rule.z * torch.sqrt(self._prev_se2 + se2))
        decreasing = (drop > threshold).any()
        lr_range = torch.maximum(self._lr_range, self._prev_lr)  # (-min, max) of both windows
        lr_constant = (lr_range[0] + lr_range[1]) <= rule.lr_rtol * lr_range[1]
        plateau = self._prev_ok & ok & lr_constant & ~decreasing
        streak = torch.where(plateau, self._streak + 1.0, 0.0)
        fired = streak >= rule.patience
        self._streak.copy_(torch.where(fired, 0.0, streak))
        self._prev_mean.copy_(mean)
        self._prev_se2.copy_(se2)
        self._prev_lr.copy_(self._lr_range)
        self._prev_ok.copy_(ok)
        self._means.fill_(math.nan)
        self._lr_range.fill_(-math.inf)
        return torch.cat([mean, torch.stack([plateau, fired]).to(torch.float64)])
