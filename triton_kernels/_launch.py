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
from .finish import finish_

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


def update_modes(*, param: torch.dtype, grad: torch.dtype, use_prologue: bool, maximize: bool,
                 has_master: bool, telemetry: bool, aligned: bool, chunk: int) -> dict[str, Any]:
    """The ``tl.constexpr`` modes every update kernel (adam, sgd, element-wise) shares; opmath
    follows the param dtype and the coefficient is applied after a prologue or for maximize."""
    return dict(PARAM=C.torch_to_triton_dtype(param), GRAD=C.torch_to_triton_dtype(grad),
                OP=C.torch_to_triton_dtype(C.opmath(param)), USE_PROLOGUE=use_prologue,
                MAXIMIZE=maximize, USE_COEF=use_prologue or maximize, HAS_MASTER=has_master,
                TELEMETRY=telemetry, ALIGNED=aligned, CHUNK=chunk)


def table_args(t: C.Tables, stats: torch.Tensor, **scalars: Any) -> dict[str, Any]:
    """The arguments every update kernel takes first (tables, stats, the partials rows and
    their stride), then its own ``scalars``."""
    partials = t.partial_sums()
    return dict(ptrs=t.ptrs, numels=t.numels, chunks=t.chunks, n_tensors=t.n_tensors,
                n_chunks=t.n_chunks, stats=stats, partials=partials,
                partials_stride=partials.stride(0), **scalars)


def update_and_finish(launch: Launcher, tables: C.Tables, stats: torch.Tensor, args_for: ArgsFor,
                      modes: dict[str, Any], *, use_prologue: bool, telemetry: bool,
                      lr_ptr: torch.Tensor | None = None) -> None:
    """One update launch, then the finish kernel: the steps advance and, with telemetry, the
    three partial sums are added to the stats (fixed order; a launch that sums is never tuned).
    ``lr_ptr``: the tensor lr the kernel read (None: a float lr)."""
    launch(tables, stats, args_for, modes, reduces=telemetry)
    finish_(tables, stats, use_prologue=use_prologue, advance_steps=True,
            n_sums=3 if telemetry else 0, lr_ptr=lr_ptr)
