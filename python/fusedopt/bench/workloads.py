"""Parameter lists to step: GPT-2 small, Llama-style lists scaled to memory, and a size sweep.

The shapes come from the packaged ``workloads.json`` (tensor shapes only: GPT-2 small has 148
tensors and 124.4M params; llama-1b-like 1.5B and llama-8b-like 8.0B params follow the public
Llama-3 configs). A multi-tensor optimizer's speed depends on the total size and on how it is
split into tensors, so scaling keeps the tensor count and the shape ratios: every dimension is
multiplied by the same factor (parameters scale with its square).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources

import torch

#: Sweep sizes (params): 1M -> 256M in steps of 4x.
SWEEP_SIZES = (1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28)
#: Tensor count of the "many tensors" half of the sweep (GPT-2 small has 148).
SWEEP_MANY = 256


@dataclass(frozen=True)
class Workload:
    """A named list of tensor shapes."""

    name: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    def describe(self) -> str:
        return f"{self.name} ({self.tensors} tensors, {human(self.numel)} params)"


def human(n: float) -> str:
    """124439808 -> '124.4M', 1048576 -> '1.0M', 2048 -> '2.0K'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _catalog() -> dict:
    text = resources.files(__package__).joinpath("workloads.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def names() -> list[str]:
    """Names of the packaged parameter lists."""
    return list(_catalog())


def named(name: str) -> Workload:
    """The packaged parameter list ``name`` (ValueError listing the known ones otherwise)."""
    catalog = _catalog()
    if name not in catalog:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(catalog)}")
    return Workload(name, tuple(tuple(s) for s in catalog[name]["shapes"]))


def _scale_dim(d: int, s: float) -> int:
    x = d * s
    # Multiples of 8 keep rows 32-byte aligned (as real models are); tiny dims stay >= 1.
    return max(8, int(round(x / 8)) * 8) if x >= 8 else max(1, int(round(x)))


def scaled(w: Workload, max_params: int) -> Workload:
    """``w`` itself if it has at most ``max_params`` params, else every dimension scaled down by
    one factor (same tensor count, same shape ratios), named ``<name>@<params>``."""
    if w.numel <= max_params:
        return w
    s = math.sqrt(max_params / w.numel)
    while True:
        shapes = tuple(tuple(_scale_dim(d, s) for d in shape) for shape in w.shapes)
        n = sum(math.prod(x) for x in shapes)
        if n <= max_params or s < 1e-6:
            return Workload(f"{w.name.split('@')[0]}@{human(n)}", shapes)
        s *= 0.97


def sweep(sizes: tuple[int, ...] = SWEEP_SIZES, many: int = SWEEP_MANY) -> list[Workload]:
    """For each size: one tensor, and ``many`` equal tensors of the same total."""
    out = []
    for n in sizes:
        out.append(Workload(f"sweep-1x{human(n)}", ((n,),)))
        per = max(1, n // many)
        out.append(Workload(f"sweep-{many}x{human(per)}", ((per,),) * many))
    return out


def available_memory(device: torch.device) -> int:
    """Bytes that can be allocated now on ``device`` (free GPU memory; MemAvailable on CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
