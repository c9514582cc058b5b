"""How a multi-tensor kernel is launched: one config under the interpreter, tuned on a GPU.

Note [autotune on scratch]: the update kernels change params and states in place through the
pointer tables, where ``triton.autotune``'s ``restore_value`` cannot reach (it restores tensor
arguments only), so timing configs on the real bucket would apply the update many times. The
first launch of every mode therefore runs the autotuner on a scratch bucket of the same dtypes
(``SCRATCH_TENSORS`` x ``SCRATCH_NUMEL`` zeros per stream), which caches its choice by the mode
flags and argument dtypes; the real bucket then only ever runs that cached config, once.
Launches that reduce (telemetry sums, the norm pass) never tune: a different BLOCK or num_warps
changes the summation order, and the sums must be the same bits in every process.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import triton

from . import _common as C
from ._device import INTERPRETED

#: builds the kernel arguments of one launch from (tables, stats)
ArgsFor = Callable[[C.Tables, torch.Tensor], dict[str, Any]]


def chunk_size() -> int:
    """Elements per chunk for the mode the kernels were built in."""
    return C.INTERPRET_CHUNK if INTERPRETED else C.GPU_CHUNK


class Launcher:
    """Launches one ``@triton.jit`` kernel over the chunks of a bucket's tables.

    Args:
        kernel: the jit kernel; its last parameter is ``BLOCK: tl.constexpr``.
        mode_names: its ``tl.constexpr`` mode parameters (the autotuning key).
        interpreted, tune, reduce, scratch, do_bench: the launch policy; the defaults follow
            the mode the kernels were built in (tests substitute small values).
    """

    def __init__(self, kernel: Any, mode_names: list[str], *, interpreted: bool = INTERPRETED,
                 tune: tuple[tuple[int, int], ...] = C.GPU_TUNE,
                 reduce: tuple[int, int] = C.GPU_REDUCE,
                 scratch: tuple[int, int] = (C.SCRATCH_TENSORS, C.SCRATCH_NUMEL),
                 do_bench: Callable | None = None) -> None:
        self.kernel = kernel
        self.interpreted = interpreted
        self.reduce = reduce
        self.scratch = scratch
        self.tuned = None
        if not interpreted:
            configs = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in tune]
            self.tuned = triton.autotune(configs=configs, key=mode_names,
                                         do_bench=do_bench)(kernel)
        self._tuned_keys: set[tuple] = set()

    def __call__(self, tables: C.Tables, stats: torch.Tensor, args_for: ArgsFor,
                 modes: dict[str, Any], *, reduces: bool) -> None:
        if tables.n_chunks == 0:
            return
        grid = (tables.n_chunks,)
        args = args_for(tables, stats)
        if self.interpreted:
            self.kernel[grid](**args, **modes, BLOCK=C.INTERPRET_BLOCK)
            return
        if reduces:
            block, warps = self.reduce
            self.kernel[grid](**args, **modes, BLOCK=block, num_warps=warps,
                              enable_fp_fusion=False)
            return
        key = tuple(sorted(modes.items())) + tuple(
            (k, v.dtype) for k, v in sorted(args.items()) if isinstance(v, torch.Tensor))
        if key not in self._tuned_keys:  # Note [autotune on scratch]
            scratch = scratch_tables(tables, *self.scratch)
            self.tuned[(scratch.n_chunks,)](**args_for(scratch, scratch_stats(stats)), **modes,
                                            enable_fp_fusion=False)
            self._tuned_keys.add(key)
        self.tuned[grid](**args, **modes, enable_fp_fusion=False)


def scratch_stats(stats: torch.Tensor) -> torch.Tensor:
    """A stats buffer with no skip and coefficients 1 (so a tuning run does all the work)."""
    s = torch.zeros_like(stats)
    s[C.COEF] = 1.0
    s[C.CLIP_COEF] = 1.0
    s[C.SCALE] = 1.0
    s[C.ABC + 2] = 1.0
    return s


def scratch_tables(like: C.Tables, n_tensors: int, numel: int) -> C.Tables:
    """Tables over fresh zero tensors, the row dtypes of ``like`` (Note [autotune on scratch])."""
    device = like.ptrs.device
    rows = {r: [torch.zeros(() if r == C.ROW_STEP else numel, dtype=dtype, device=device)
                for _ in range(n_tensors)]
            for r, dtype in like.row_dtypes.items()}
    tables = C.build_tables(rows, like.chunk)
    tables.owned = rows
    return tables
