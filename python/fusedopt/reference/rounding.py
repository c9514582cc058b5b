"""Stochastic rounding of fp32 results into bf16 and fp16 storage.

A bf16 param updated without an fp32 master loses every update smaller than half an ulp of
the param when the result is rounded to nearest: late in training most updates are that small,
and the param stops moving. Rounding stochastically, up with probability equal to the distance
from the lower neighbour in ulps, keeps the expected stored value equal to the fp32 result, so
small updates survive on average (Gupta et al. 2015, "Deep Learning with Limited Numerical
Precision"; Zamirai et al. 2020, "Revisiting BFloat16 Training").

Both functions take the fp32 result ``x`` and one 32-bit random word per element (``r``, an
integer tensor read modulo 2^32; fusedopt draws it with :func:`.philox.element_randoms`), and
are pure functions of them: a kernel given the same words must produce the same bits.

The contract, for finite ``x`` with ``lo`` and ``hi`` the neighbours of ``x`` in the target
format toward and away from zero (``lo = hi = x`` when ``x`` is representable):

* the result is ``lo`` or ``hi``, with the sign of ``x`` (so ``SR(-x, r) = -SR(x, r)``, and
  -0.0 stays -0.0);
* P(hi) = (|x| - |lo|) / (|hi| - |lo|) exactly, over a uniform random word, so E[result] = x:
  the rounding is unbiased (fp16: see the one exception below 2^-48 in
  :func:`stochastic_round_fp16`);
* beyond the largest finite value the next neighbour is inf, taken with that same probability
  (bf16 values above 2^128 - 2^120, fp16 above 65504, round up to inf with probability
  (|x| - max) / ulp(max), and always from max + 1 ulp on). Round-to-nearest-even (torch's
  ``.to()``) goes to inf from max + half an ulp on, and rounds everything below that to max.
* NaN and inf round as torch's ``.to()`` does: NaN stays NaN, inf stays inf.
"""
from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
FP16_MANTISSA_BITS = 10
FP16_EXP_BIAS = 15
FP16_MAX_BITS = 0x7BFF  # 65504


def _check(x: Tensor, r: Tensor) -> None:
    if x.dtype != torch.float32:
        raise TypeError(f"fusedopt: stochastic rounding takes an fp32 tensor, got {x.dtype}")
    if r.dtype.is_floating_point or r.dtype.is_complex or r.dtype == torch.bool:
        raise TypeError(f"fusedopt: the random words must be an integer tensor, got {r.dtype}")


def _unsigned_bits32(x: Tensor) -> Tensor:
    """The fp32 bit pattern of ``x`` as int64 values in [0, 2^32)."""
    return x.contiguous().view(torch.int32).to(torch.int64) & MASK32


def _from_bits16(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """The 16-bit float of ``dtype`` whose bit pattern is ``bits`` (int64 in [0, 2^16))."""
    signed = torch.where(bits >= 0x8000, bits - 0x10000, bits)
    return signed.to(torch.int16).view(dtype)


def stochastic_round_bf16(x: Tensor, r: Tensor) -> Tensor:
    """``x`` (fp32) rounded stochastically to bf16 with the random words ``r``.

    A bf16 is the upper half of an fp32, so for finite ``x``::

        bits = fp32 bits of x (unsigned);  result = upper 16 bits of (bits + (r & 0xFFFF))

    The low 16 bits ``f`` of ``bits`` are the distance from ``lo`` (the upper half alone,
    ``x`` truncated toward zero) in units of 2^-16 bf16 ulps, and the addition carries into the
    upper half, giving the next bf16 away from zero, exactly when ``(r & 0xFFFF) >= 2^16 - f``:
    for 16 uniform bits that is probability ``f / 2^16`` = (|x| - |lo|) / ulp, exactly. When
    ``f = 0`` (``x`` is a bf16) nothing below 2^16 carries, so ``x`` is returned unchanged.

    IEEE floats are sign-magnitude: the low 31 bits order magnitudes the same way as the
    integers they spell, across exponent boundaries and subnormals (a carry out of the mantissa
    steps the exponent, which is exactly the next larger magnitude), and the sign bit is left
    alone: a finite magnitude is at most 0x7F7FFFFF, and adding below 2^16 reaches at most
    0x7F80FFFE, whose upper half 0x7F80 is +inf's pattern. So negative ``x`` rounds its
    magnitude like positive ``x`` and keeps its sign, and the top finite interval rounds up to
    inf with probability ``f / 2^16``. Non-finite ``x`` is left out of the trick (a NaN's low
    payload bits could carry or truncate into inf) and converted as ``x.to(torch.bfloat16)``.
    """
    _check(x, r)
    bits = _unsigned_bits32(x)
    rounded = (bits + (r.to(torch.int64) & 0xFFFF)) >> 16
    return torch.where(torch.isfinite(x), _from_bits16(rounded, torch.bfloat16),
                       x.to(torch.bfloat16))


def _fp16_magnitude(bits: Tensor) -> Tensor:
    """The fp64 value of non-negative fp16 bit patterns (int64 in [0, 0x7C00]), reading the
    pattern 0x7C00 of inf as 2^16, the value it would have if the exponent went on: the
    distance from 65504 to inf's pattern is then one ulp (32), like every other step."""
    exp = bits >> FP16_MANTISSA_BITS
    man = (bits & ((1 << FP16_MANTISSA_BITS) - 1)).to(torch.float64)
    scale = torch.exp2((torch.clamp(exp, min=1) - FP16_EXP_BIAS - FP16_MANTISSA_BITS)
                       .to(torch.float64))
    significand = torch.where(exp == 0, man, man + (1 << FP16_MANTISSA_BITS))
    return significand * scale


def stochastic_round_fp16(x: Tensor, r: Tensor) -> Tensor:
    """``x`` (fp32) rounded stochastically to fp16 with the random words ``r``.

    fp16 is not a truncated fp32 (5 exponent bits, 10 mantissa bits, subnormals below 2^-14,
    largest finite 65504), so the neighbours are found explicitly, on ``a = |x|``::

        lo = a rounded toward zero to fp16 (a pattern in [0, 0x7BFF]), hi = the next pattern
        frac = (a - lo) / (hi - lo)                   in fp64
        u = (r >> 8) * 2^-24                          the top 24 bits of the word, in [0, 1)
        |result| = hi if u < frac else lo;  result = copysign(|result|, x)

    ``hi - lo`` is the fp16 ulp at ``lo``, a power of two (32 from 65504 to inf's pattern,
    read as 2^16). For ``a < 65536`` that ulp is a multiple of ``a``'s fp32 ulp, so ``lo`` lies
    on ``a``'s fp32 grid and ``a - lo`` is a multiple of that grid no larger than ``a``: at
    most 24 significant bits. ``a - lo``, the quotient by a power of two and ``u`` are then
    exact in fp64 (53 bits), and so is the comparison. P(hi) is ``ceil(frac 2^24) / 2^24``,
    which is ``frac`` exactly whenever ``frac`` is a multiple of 2^-24: for every
    ``a >= 2^-25`` (fp16's normal range puts ``frac`` on a 2^-13 grid; its subnormal range,
    whose ulp is 2^-24, on grids down to 2^-24; 16 random bits would not do there). Below
    2^-25, where ``x`` rounds to 0 or 2^-24, the probability of 2^-24 is over-estimated by
    less than 2^-24: a bias under 2^-48 in absolute value.

    Overflow as for bf16: ``a`` in (65504, 65536) rounds to inf with probability
    (a - 65504) / 32, and ``a >= 65536`` always (``frac >= 1``: fp64 rounds ``a - 65504 >= 32``
    to at least 32); torch's round-to-nearest gives inf from 65520 on. NaN and inf convert as
    ``x.to(torch.float16)``.

    The two formats read the word differently (bf16 rounds up for large low halves, fp16 for
    small top 24 bits); each is unbiased, and each is the contract its kernels follow.
    """
    _check(x, r)
    a = torch.abs(x)
    nearest = a.to(torch.float16)  # round to nearest even, possibly inf
    nearest_bits = nearest.view(torch.int16).to(torch.int64) & 0xFFFF
    a64 = a.to(torch.float64)
    above = _fp16_magnitude(nearest_bits) > a64
    # beyond 2^16 the nearest is inf and not above |x| under the 2^16 reading: clamp to 65504
    lo_bits = torch.clamp(torch.where(above, nearest_bits - 1, nearest_bits), max=FP16_MAX_BITS)
    lo = _fp16_magnitude(lo_bits)
    hi = _fp16_magnitude(lo_bits + 1)
    frac = (a64 - lo) / (hi - lo)
    u = ((r.to(torch.int64) & MASK32) >> 8).to(torch.float64) * 2.0**-24
    mag_bits = torch.where(u < frac, lo_bits + 1, lo_bits)
    sign = (_unsigned_bits32(x) >> 31) << 15
    return torch.where(torch.isfinite(x), _from_bits16(mag_bits | sign, torch.float16),
                       x.to(torch.float16))
