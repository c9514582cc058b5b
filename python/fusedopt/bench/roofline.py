"""Same-run memory roofline: a copy and a read pass over a buffer as large as the working set.

The buffer holds as many bytes as one contender's params, grads and states (so it sits in the
same level of the memory hierarchy as the step's data: DRAM for GPT-2 small, cache for the
smallest sweep sizes). Both kernels are torch's own, at the thread count the step runs with,
and they are timed inside the same interleaved rounds as the optimizers, so the roofline sees
the same machine load. GB/s counts a copy as its bytes read plus its bytes written, the
convention of the bytes model (:mod:`fusedopt.bench.bytes_model`).

* ``roofline.copy``: an in-place copy, ``buffer.mul_(1.0)``: every byte read and written back
  in place, which is the traffic pattern of an optimizer step (it updates p, m, v in place).
  A copy into another buffer (``dst.copy_(src)``) is not the right bound for that: on a CPU
  each written cache line is first read for ownership (write-allocate), so such a copy moves
  1.5x the bytes it counts and reached only ~26 GB/s here where in-place passes reach ~49.
* ``roofline.read``: ``buffer.sum()`` (a read of every byte; the result is one number).
"""
from __future__ import annotations

import torch

from .bytes_model import fusedopt_state_dtype, resident_bytes
from .case import Case
from .contenders import ROOFLINE, Contender, Runner

_KEY = "roofline_buffer"


def working_set_bytes(case: Case) -> int:
    """Bytes of one contender's params, grads and states in this case (fusedopt's dtypes)."""
    per_param = resident_bytes(case.algorithm, case.mode, fusedopt_state_dtype(case.mode))
    return per_param * case.workload.numel


def _buffer(case: Case) -> torch.Tensor:
    """The case's roofline buffer (fp32, filled so that every page is really mapped)."""
    buf = case.scratch.get(_KEY)
    if buf is None:
        n = max(2, working_set_bytes(case) // 4 // 2 * 2)
        buf = case.scratch[_KEY] = torch.ones(n, dtype=torch.float32, device=case.device)
    return buf


def _copy(case: Case) -> Runner:
    buf = _buffer(case)
    return Runner(lambda: buf.mul_(1.0), "buffer.mul_(1.0): in-place read + write of the buffer",
                  moved_bytes=2 * buf.numel() * buf.element_size())


def _read(case: Case) -> Runner:
    buf = _buffer(case)
    return Runner(lambda: buf.sum(), "buffer.sum()", moved_bytes=buf.numel() * buf.element_size())


COPY = Contender("roofline.copy", ROOFLINE, _copy)
READ = Contender("roofline.read", ROOFLINE, _read)
CONTENDERS = [COPY, READ]
