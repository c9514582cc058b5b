"""Bytes a step must move per parameter: the traffic of a fused implementation.

Every stream is counted once per pass in its storage dtype: a read costs the element size, a
write the element size again (read-for-ownership traffic is not counted, as for the copy roofline,
so the two are comparable). The step itself is passes over memory
(docs/architecture.md#passes-over-memory):

* the update pass reads p, g and every state and writes p and every state:
  ``2 P + G + 2 S * states`` (fp32 AdamW: 8 + 4 + 16 = 28 B);
* a norm pass reads g once more (``G``) when the step clips, unscales under AMP, or the
  algorithm needs ``||g||`` every step (AdaGrad-Norm, NSGD, Clip-SGD); IAN-SGD's
  ``record_normalizer()`` reads the independent batch's grads (``G``) on top;
* NSGDm updates its momentum in a pass of its own (read g and m, write m) and then steps along
  m (read p and m, write p).

With ``P``, ``G`` the param and grad element sizes and ``S`` the state element size. GB/s in
the results is this count times the param count over the median step time, for every
contender with its own storage dtypes: a contender that moves more than this (several
passes) shows a lower GB/s for the same work.
"""
from __future__ import annotations

import torch

from .. import registry
from .modes import Mode

#: Algorithms whose every step needs the global grad norm, with the reason.
NORM_EVERY_STEP = {
    "adagrad_norm": "B <- B + ||g||^2",
    "nsgd": "h = ||g|| + delta",
    "clip_sgd": "h = max(||g|| + delta, floor)",
}
#: Algorithms that read the grads once more per step outside the norm pass, with the reason.
EXTRA_GRAD_READ = {"iansgd": "record_normalizer(): ||g'|| of the independent batch"}


def fusedopt_state_dtype(mode: Mode) -> torch.dtype:
    """State dtype fusedopt uses by default in ``mode``: fp32 for 16-bit params."""
    return torch.float32 if mode.param_dtype in (torch.bfloat16, torch.float16) else mode.param_dtype


def _sizes(mode: Mode, state_dtype: torch.dtype | None) -> tuple[int, int, int]:
    p = mode.param_dtype.itemsize
    s = state_dtype.itemsize if state_dtype is not None else 0
    return p, p, s  # grads have the param dtype in every mode


def update_bytes(algorithm: str, mode: Mode, state_dtype: torch.dtype | None) -> int:
    """Bytes per param of the update pass(es) alone (no norm pass)."""
    p, g, s = _sizes(mode, state_dtype)
    if algorithm == "nsgdm":
        return (g + 2 * s) + (2 * p + s)
    return 2 * p + g + 2 * s * len(registry.get(algorithm).state_keys)


def grad_norm_reads(algorithm: str, mode: Mode) -> int:
    """Extra reads of the grads per step: the norm pass, plus IAN-SGD's normalizer pass."""
    norm = mode.clip or mode.amp or algorithm in NORM_EVERY_STEP
    return int(norm) + int(algorithm in EXTRA_GRAD_READ)


def fused_bytes(algorithm: str, mode: Mode, state_dtype: torch.dtype | None) -> int:
    """Bytes per param one step of ``algorithm`` in ``mode`` moves when fused.

    ``state_dtype``: the storage dtype of the states (None for a stateless algorithm).
    """
    _, g, _ = _sizes(mode, state_dtype)
    return update_bytes(algorithm, mode, state_dtype) + g * grad_norm_reads(algorithm, mode)


def torch_composition_bytes(algorithm: str, mode: Mode, state_dtype: torch.dtype | None) -> int:
    """Bytes per param of torch's composition around a one-pass (fused) torch.optim step, for
    an algorithm with a torch.optim equivalent.

    ``GradScaler.unscale_`` reads and writes every grad (2 G); ``clip_grad_norm_`` reads the
    grads for the norm and then reads and writes them to scale (3 G); then the fused step.
    fp32 AdamW with clip + AMP: 8 + 12 + 28 = 48 B, against 32 B fused.
    """
    _, g, _ = _sizes(mode, state_dtype)
    extra = (2 * g if mode.amp else 0) + (3 * g if mode.clip else 0)
    return update_bytes(algorithm, mode, state_dtype) + extra


def resident_bytes(algorithm: str, mode: Mode, state_dtype: torch.dtype | None) -> int:
    """Bytes per param held by one contender: params, grads and its states (the working set)."""
    p, g, s = _sizes(mode, state_dtype)
    return p + g + s * len(registry.get(algorithm).state_keys)


def markdown_table(algorithms: list[str], modes: list[Mode]) -> str:
    """Bytes per param per algorithm and mode, fused and (where torch has the algorithm) in
    torch's composition around its fused step: the table of bench/README.md."""
    lines = ["| algorithm | mode | states | fusedopt fused | torch composition |",
             "|---|---|---|---:|---:|"]
    for a in algorithms:
        info = registry.get(a)
        for m in modes:
            sdt = fusedopt_state_dtype(m) if info.state_keys else None
            torch_sdt = m.param_dtype if info.state_keys else None
            torch_cell = (f"{torch_composition_bytes(a, m, torch_sdt)} ({_name(torch_sdt)})"
                          if info.torch_equivalent is not None else "-")
            lines.append(f"| {a} | {m.name} | {', '.join(info.state_keys) or '-'} | "
                         f"{fused_bytes(a, m, sdt)} ({_name(sdt)}) | {torch_cell} |")
    return "\n".join(lines)


def _name(dtype: torch.dtype | None) -> str:
    return {torch.float32: "fp32 states", torch.bfloat16: "bf16 states",
            torch.float16: "fp16 states", torch.float64: "fp64 states"}.get(dtype, "no states")
