"""Philox4x32-10, the counter-based generator of stochastic rounding (Salmon et al. 2011,
"Parallel Random Numbers: As Easy as 1, 2, 3", the Random123 library).

A counter-based generator is a pure function ``(key, counter) -> random words``: there is no
state to carry from one draw to the next, so any element's random word can be computed by
whichever thread, block or backend handles that element, in any order. That is what makes a
stochastically rounded run bitwise reproducible on any thread count and identical on every
backend.

The round (exactly Triton's ``triton.language.random.philox`` with 32-bit counters, which is
Random123's philox4x32 with 10 rounds)::

    hi_a, lo_a = mulhilo32(0xD2511F53, c0)      # the full 64-bit product, split in halves
    hi_b, lo_b = mulhilo32(0xCD9E8D57, c2)
    c0, c1, c2, c3 = hi_b ^ c1 ^ k0,  lo_b,  hi_a ^ c3 ^ k1,  lo_a
    k0, k1 = k0 + 0x9E3779B9, k1 + 0xBB67AE85   # mod 2^32 (the Weyl key schedule)

ten times; the output is the final ``(c0, c1, c2, c3)``. The key is the 64-bit seed split as
``k0 = seed & 0xFFFFFFFF``, ``k1 = seed >> 32`` (Triton's split). Triton also bumps the key
after the last round, which changes nothing.

torch has no full uint32 arithmetic, so every word is an int64 tensor holding a value in
``[0, 2^32)``. A product of two such values can reach 2^64 and overflow int64, so the counter
is split into 16-bit halves ``c = ch 2^16 + cl`` and ``M c = (M ch + (M cl >> 16)) 2^16 +
(M cl & 0xFFFF)``: both partial products stay below 2^48 (see :func:`_mulhilo32`).

Verified (tests/test_reference_lowprec.py): bitwise equal to Triton 3.6's own ``philox`` run
under ``TRITON_INTERPRET=1`` on random seeds (below and above 2^63) and counters (below and
above 2^31, and the all-ones counter); and the three philox4x32-10 known-answer vectors of
Random123's ``kat_vectors`` file (counters and key all zero, all ones, and the digits of pi),
as reproduced in D. E. Shaw Research's core123 unit test ``ut_philox.cpp``.

The counter layout of fusedopt's stochastic rounding (:func:`element_randoms`): element ``i``
(0-based, in the param's memory order) of the param with optimizer-wide index ``pid`` (its
position in the optimizer's flat param order), at optimizer step ``step`` (the count after the
increment, >= 1)::

    c0 = i & 0xFFFFFFFF,  c1 = i >> 32,  c2 = pid,  c3 = step & 0xFFFFFFFF,  key = seed

and the random word of a rounding is the first output, ``r0``. Every (element, param, step)
gets its own counter, so no two roundings of a run share a random word (up to 2^32 steps), and
the word depends on nothing a backend chooses: not the chunking, the launch grid, the bucket
or the thread count.
"""
from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
ROUNDS = 10
#: the round multipliers and the key schedule's Weyl increments of philox4x32
MUL_A = 0xD2511F53
MUL_B = 0xCD9E8D57
KEY_A = 0x9E3779B9
KEY_B = 0xBB67AE85


def _mulhilo32(m: int, c: Tensor) -> tuple[Tensor, Tensor]:
    """The high and low 32 bits of ``m * c`` for a 32-bit constant ``m`` and an int64 tensor
    ``c`` of values in [0, 2^32), without overflowing int64.

    With ``c = ch 2^16 + cl``: ``t = m cl < 2^48`` and ``u = m ch + (t >> 16) < 2^49``, and
    ``m c = u 2^16 + (t & 0xFFFF)`` where the last term is below 2^16, so it never carries
    into bit 32: ``hi = u >> 16`` and ``lo = ((u & 0xFFFF) << 16) | (t & 0xFFFF)``."""
    t = m * (c & 0xFFFF)
    u = m * (c >> 16) + (t >> 16)
    return u >> 16, ((u & 0xFFFF) << 16) | (t & 0xFFFF)


def _word(c: int | Tensor, device: torch.device | None) -> Tensor:
    """A counter word as an int64 tensor taken modulo 2^32 (so an int32 tensor holding a
    bitcast uint32 gives the same word, as Triton's bitcast does)."""
    if isinstance(c, Tensor):
        return c.to(torch.int64) & MASK32
    return torch.as_tensor(c, dtype=torch.int64, device=device) & MASK32


def split_seed(seed: int | Tensor) -> tuple[int | Tensor, int | Tensor]:
    """``(k0, k1)``: the low and high 32 bits of the 64-bit ``seed``.

    A Python int must lie in [0, 2^64) (ValueError else); an integer tensor is read as the 64
    bits of an int64 (so seeds >= 2^63 are stored as their two's-complement bit pattern), on
    the device, without a host read."""
    if isinstance(seed, Tensor):
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise TypeError(f"fusedopt: the philox seed must be an integer tensor, got {seed.dtype}")
        s = seed.to(torch.int64)
        return s & MASK32, (s >> 32) & MASK32
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"fusedopt: the philox seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"fusedopt: the philox seed must lie in [0, 2^64), got {seed}")
    return seed & MASK32, seed >> 32


def philox4x32(seed: int | Tensor, c0: int | Tensor, c1: int | Tensor, c2: int | Tensor,
               c3: int | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 of the counter ``(c0, c1, c2, c3)`` under the key ``seed``.

    The counter words are ints or integer tensors (taken modulo 2^32), broadcast together;
    the four output words are int64 tensors of values in [0, 2^32) on the counters' device.
    """
    tensors = [c for c in (c0, c1, c2, c3, seed) if isinstance(c, Tensor)]
    device = tensors[0].device if tensors else None
    k0, k1 = split_seed(seed)
    x0, x1, x2, x3 = torch.broadcast_tensors(*(_word(c, device) for c in (c0, c1, c2, c3)))
    for _ in range(ROUNDS):
        hi_a, lo_a = _mulhilo32(MUL_A, x0)
        hi_b, lo_b = _mulhilo32(MUL_B, x2)
        x0, x1, x2, x3 = hi_b ^ x1 ^ k0, lo_b, hi_a ^ x3 ^ k1, lo_a
        k0 = (k0 + KEY_A) & MASK32
        k1 = (k1 + KEY_B) & MASK32
    return x0, x1, x2, x3


def element_randoms(seed: int | Tensor, pid: int, step: int | Tensor, numel: int,
                    offset: int = 0, device: torch.device | str | None = None) -> Tensor:
    """The random word ``r0`` of elements ``offset .. offset + numel - 1`` of one param, in
    memory order (the counter layout of the module docstring): an int64 tensor of ``numel``
    values in [0, 2^32). ``offset`` is the param index of the first element (0 for a whole
    param; a shard's start in its unsharded param, so a sharded run draws the same words).

    ``step`` is the param's step count after the increment: an int, or a 0-d tensor (an fp32
    step count is exact up to 2^24 and is converted on the device, without a host read)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid <= MASK32:
        raise ValueError(f"fusedopt: the param index must be an int in [0, 2^32), got {pid!r}")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"fusedopt: numel must be a non-negative int, got {numel!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"fusedopt: offset must be a non-negative int, got {offset!r}")
    if offset + numel > 2**63 - 1:
        raise ValueError("fusedopt: element indices must stay below 2^63")
    if device is None:
        device = next((t.device for t in (seed, step) if isinstance(t, Tensor)), None)
    i = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    if isinstance(step, Tensor):
        step = step.to(device=i.device, dtype=torch.int64).reshape(())
    if isinstance(seed, Tensor):
        seed = seed.to(i.device).reshape(())
    r0, _, _, _ = philox4x32(seed, i & MASK32, i >> 32, pid, step)
    return r0
