"""The reference layer of issue 20's low-precision pieces: the Philox generator
(fusedopt.reference.philox), stochastic rounding to bf16/fp16 (fusedopt.reference.rounding) and
blockwise dynamic 8-bit quantization (fusedopt.reference.quantize). These are the oracles the
kernels will be checked against bit for bit, so each is checked here against something
independent: Triton's own philox and Random123's known answers, an exact rational
re-implementation of the rounding rules, and bitsandbytes' code book.

The Triton comparison needs ``TRITON_INTERPRET=1`` set before triton is first imported
(Note [interpreter mode] in fusedopt.triton_kernels); a process that cannot interpret re-runs
that one test in a child process that can (tests/interpreted.py).
"""
from __future__ import annotations

import hashlib
import math
import random
from fractions import Fraction

import pytest
import torch

from fusedopt.backends import triton_backend
from fusedopt.reference.adam_family import lerp
from fusedopt.reference.philox import _mulhilo32, element_randoms, philox4x32
from fusedopt.reference.quantize import (BLOCK, dequantize_blockwise, dynamic_code, max_gap,
                                         midpoints, quantize_blockwise)
from fusedopt.reference.rounding import stochastic_round_bf16, stochastic_round_fp16

from interpreted import assert_interpreted_run_passes

TRITON_OK, TRITON_WHY = triton_backend.availability()
INTERPRETER = TRITON_OK and triton_backend.supports("cpu")
U32 = 2**32


def words(*ws) -> list[int]:
    return [int(w) for w in ws]


# ------------------------------------------------------------------------------------ philox
# Random123's kat_vectors for philox4x32 with 10 rounds: (c0, c1, c2, c3, k0, k1) -> outputs,
# as reproduced in D. E. Shaw Research's core123 unit test ut_philox.cpp.
PHILOX_KAT = [
    ((0, 0, 0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 6, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("kat", PHILOX_KAT)
def test_philox_known_answers(kat):
    (c0, c1, c2, c3, k0, k1), expected = kat
    seed = (k1 << 32) | k0  # Triton's key split: k0 = low 32 bits of the seed
    assert words(*philox4x32(seed, c0, c1, c2, c3)) == list(expected)
    # the same counters as tensors (int64 and bitcast int32) give the same words
    as64 = [torch.tensor([c], dtype=torch.int64) for c in (c0, c1, c2, c3)]
    as32 = [torch.tensor([c - U32 if c >= 2**31 else c], dtype=torch.int32)
            for c in (c0, c1, c2, c3)]
    assert words(*(w[0] for w in philox4x32(seed, *as64))) == list(expected)
    assert words(*(w[0] for w in philox4x32(seed, *as32))) == list(expected)
    assert words(*(w[0] for w in philox4x32(torch.tensor(seed - 2**64 if seed >= 2**63 else seed),
                                            *as64))) == list(expected)


def test_mulhilo32_is_the_exact_product():
    rng = random.Random(1)
    ms = [0xD2511F53, 0xCD9E8D57, 0xFFFFFFFF, 1, 0]
    cs = [0, 1, 0xFFFF, 0x10000, 2**31 - 1, 2**31, U32 - 1] + [rng.randrange(U32) for _ in range(500)]
    c = torch.tensor(cs, dtype=torch.int64)
    for m in ms:
        hi, lo = _mulhilo32(m, c)
        assert hi.tolist() == [(m * x) >> 32 for x in cs]
        assert lo.tolist() == [(m * x) & (U32 - 1) for x in cs]


def test_philox_broadcasts_and_stays_in_32_bits():
    c0 = torch.arange(6, dtype=torch.int64).reshape(6, 1)
    c3 = torch.tensor([[1, 2, 3]])
    out = philox4x32(7, c0, 0, 5, c3)
    assert all(w.shape == (6, 3) and w.dtype == torch.int64 for w in out)
    assert all(int(w.min()) >= 0 and int(w.max()) < U32 for w in out)
    for i in range(6):
        for j in range(3):
            assert words(*(w[i, j] for w in out)) == words(*philox4x32(7, i, 0, 5, j + 1))


def test_philox_seed_validation():
    with pytest.raises(ValueError):
        philox4x32(2**64, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        philox4x32(-1, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        philox4x32(1.0, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        philox4x32(torch.tensor(1.0), 0, 0, 0, 0)


def test_element_randoms_counter_layout():
    """c0 = i & 0xFFFFFFFF, c1 = i >> 32, c2 = pid, c3 = step, key = seed; r0 is the word."""
    seed, pid, step = 0x1234_5678_9ABC_DEF0, 3, 17
    r = element_randoms(seed, pid, step, 5)
    assert r.tolist() == [int(philox4x32(seed, i, 0, pid, step)[0]) for i in range(5)]
    # an offset crossing 2^32 carries into c1 (a shard of a param of more than 2^32 elements)
    r = element_randoms(seed, pid, step, 4, offset=U32 - 2)
    expected = [int(philox4x32(seed, i & (U32 - 1), i >> 32, pid, step)[0])
                for i in range(U32 - 2, U32 + 2)]
    assert r.tolist() == expected
    assert element_randoms(seed, pid, step, 7)[3:].tolist() == \
        element_randoms(seed, pid, step, 4, offset=3).tolist()
    # tensor seed and step (fp32 step counts as torch.optim keeps them) draw the same words
    t = element_randoms(torch.tensor(seed), pid, torch.tensor(float(step)), 5)
    assert t.tolist() == element_randoms(seed, pid, step, 5).tolist()
    # every coordinate of the counter changes the words
    base = element_randoms(seed, pid, step, 64)
    for other in (element_randoms(seed + 1, pid, step, 64), element_randoms(seed, pid + 1, step, 64),
                  element_randoms(seed, pid, step + 1, 64), element_randoms(seed, pid, step, 64, 1)):
        assert (other != base).sum() > 60
    assert element_randoms(seed, pid, step, 0).shape == (0,)


# Triton's philox, run by the interpreter (the kernel is defined only where triton imports).
PHILOX_SEEDS = [0, 1, 0x9E3779B9, 2**31 + 5, 2**32, 2**40 + 3, 2**63 - 1, 2**63 + 12345,
                2**64 - 1]


def _triton_philox(seed: int, c: torch.Tensor) -> torch.Tensor:
    """Triton's ``tl.philox(seed, c0, c1, c2, c3)`` on int32 (bitcast uint32) counter rows."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(seed, c_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        c0 = tl.load(c_ptr + offs, mask=m)
        c1 = tl.load(c_ptr + n + offs, mask=m)
        c2 = tl.load(c_ptr + 2 * n + offs, mask=m)
        c3 = tl.load(c_ptr + 3 * n + offs, mask=m)
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3)
        tl.store(out_ptr + offs, r0.to(tl.int32, bitcast=True), mask=m)
        tl.store(out_ptr + n + offs, r1.to(tl.int32, bitcast=True), mask=m)
        tl.store(out_ptr + 2 * n + offs, r2.to(tl.int32, bitcast=True), mask=m)
        tl.store(out_ptr + 3 * n + offs, r3.to(tl.int32, bitcast=True), mask=m)

    n = c.shape[1]
    c32 = torch.where(c >= 2**31, c - U32, c).to(torch.int32).contiguous()
    out = torch.empty(4, n, dtype=torch.int32)
    kernel[(triton.cdiv(n, 1024),)](seed, c32, out, n, BLOCK=1024)
    return out.to(torch.int64) & (U32 - 1)


@pytest.mark.skipif(not INTERPRETER, reason="runs in the TRITON_INTERPRET=1 child process "
                                            "(test_philox_matches_triton_in_child)")
def test_philox_matches_triton_interpreted():
    g = torch.Generator().manual_seed(20)
    n = 2500
    c = torch.randint(0, U32, (4, n), generator=g, dtype=torch.int64)
    c[:, 0] = U32 - 1            # the all-ones counter
    c[:, 1] = 0                  # the all-zero counter
    c[:, 2:200] |= 2**31         # every word >= 2^31
    c[:, 200:400] &= 2**31 - 1   # every word < 2^31
    for seed in PHILOX_SEEDS:
        got = _triton_philox(seed, c)
        ref = torch.stack(philox4x32(seed, *c))
        assert torch.equal(got, ref), f"seed {seed:#x}: {(got != ref).any(0).sum()} counters differ"


@pytest.mark.skipif(INTERPRETER or not TRITON_OK,
                    reason=TRITON_WHY if not TRITON_OK else "this process interprets itself")
def test_philox_matches_triton_in_child():
    assert_interpreted_run_passes(__file__, "-k", "matches_triton_interpreted")


# ---------------------------------------------------------------------------------- rounding

ROUNDERS = {torch.bfloat16: stochastic_round_bf16, torch.float16: stochastic_round_fp16}
# (mantissa bits, smallest normal exponent, largest finite value) of each target format
FORMATS = {torch.bfloat16: (7, -126, Fraction(2**128 - 2**120)),
           torch.float16: (10, -14, Fraction(65504))}


def slow_stochastic_round(x: float, r: int, dtype: torch.dtype) -> float:
    """The rounding contract of fusedopt.reference.rounding restated in exact rationals, one
    value at a time: the neighbours from the binade and ulp of |x|, the probability-weighted
    choice from each format's documented use of the word, no bit patterns."""
    if math.isnan(x) or math.isinf(x):
        return x
    man, emin, fmax = FORMATS[dtype]
    a = abs(Fraction(x))
    if a == 0:
        return x
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (max(e, emin) - man)
    lo = (a // ulp) * ulp
    frac = (a - lo) / ulp
    if dtype == torch.bfloat16:
        up = (r & 0xFFFF) + frac * 2**16 >= 2**16  # the carry out of the low half
    else:
        up = Fraction(r >> 8, 2**24) < frac
    mag = lo + ulp if up else lo
    out = math.inf if mag > fmax else float(mag)
    return math.copysign(out, x)


def interesting_fp32(n: int, seed: int) -> torch.Tensor:
    """fp32 values over the whole range (random bit patterns, subnormals included), near 1,
    near each format's largest finite value, in fp16's subnormal range, exact 16-bit values,
    signed zeros and non-finite values; both signs."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 0x7F800000, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    parts = [
        bits.view(torch.float32),
        1 + torch.rand(n, generator=g),
        torch.rand(n, generator=g) * 1e-3,
        65504 + torch.rand(n // 8, generator=g) * 64,
        3.3895314e38 + torch.rand(n // 8, generator=g) * 1e31,
        torch.rand(n // 4, generator=g) * 2**-14,
        torch.rand(n // 4, generator=g) * 2**-23,
        torch.randn(n // 4, generator=g).to(torch.bfloat16).float(),
        torch.randn(n // 4, generator=g).to(torch.float16).float(),
        torch.tensor([0.0, 2**-24, 2**-25, 3 * 2**-26, 2**-149, 2**-126, 65504, 65520, 65536,
                      3.4028235e38, float("inf"), float("nan")]),
    ]
    x = torch.cat(parts).to(torch.float32)
    return torch.cat([x, -x])


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_stochastic_rounding_matches_the_exact_slow_rule(dtype):
    x = interesting_fp32(600, seed=5)
    g = torch.Generator().manual_seed(6)
    r = torch.randint(0, U32, x.shape, generator=g, dtype=torch.int64)
    r[:8] = torch.tensor([0, U32 - 1, 0xFFFF, 0x10000, 0xFF, 0x100, 2**31, 0x7FFF])
    got = ROUNDERS[dtype](x, r)
    assert got.dtype == dtype and got.shape == x.shape
    slow = torch.tensor([slow_stochastic_round(v, w, dtype) for v, w in zip(x.tolist(), r.tolist())],
                        dtype=torch.float64).to(dtype)
    nan = torch.isnan(slow)
    assert torch.equal(torch.isnan(got), nan)
    same_bits = got.view(torch.int16) == slow.view(torch.int16)
    assert bool(same_bits[~nan].all()), \
        f"{int((~same_bits[~nan]).sum())} of {x.numel()} values differ, e.g. x = " \
        f"{x[~nan][~same_bits[~nan]][:4].tolist()}"


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_stochastic_rounding_returns_a_neighbour(dtype):
    """The result is x itself when x is representable, else one of the two values of the
    format that bracket x (inf above the largest finite value)."""
    x = interesting_fp32(2000, seed=7)
    x = x[torch.isfinite(x)]
    g = torch.Generator().manual_seed(8)
    for _ in range(4):
        r = torch.randint(0, U32, x.shape, generator=g, dtype=torch.int64)
        got = ROUNDERS[dtype](x, r)
        exact = x.to(dtype).float() == x
        assert torch.equal(got.float()[exact], x[exact])
        # one step from the result toward x passes x: the result is adjacent to x
        toward = torch.nextafter(got, torch.where(got.float() < x, torch.inf, -torch.inf).to(dtype))
        g64, t64, x64 = got.double(), toward.double(), x.double()
        inside = ((g64 < x64) & (x64 < t64)) | ((t64 < x64) & (x64 < g64))
        assert bool((inside | exact).all()), x[~(inside | exact)][:4].tolist()


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_stochastic_rounding_is_sign_symmetric(dtype):
    x = interesting_fp32(1000, seed=9)
    r = torch.randint(0, U32, x.shape, generator=torch.Generator().manual_seed(10))
    pos, neg = ROUNDERS[dtype](x, r), ROUNDERS[dtype](-x, r)
    nan = torch.isnan(x)
    assert torch.equal((-pos)[~nan].view(torch.int16), neg[~nan].view(torch.int16))


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_stochastic_rounding_of_special_values(dtype):
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -2.0])
    for w in (0, 0xFFFF, 0xFFFFFF00, U32 - 1):
        got = ROUNDERS[dtype](x, torch.full(x.shape, w))
        assert torch.isnan(got[0])
        assert got[1:].view(torch.int16).tolist() == x[1:].to(dtype).view(torch.int16).tolist()
    with pytest.raises(TypeError):
        ROUNDERS[dtype](x.double(), torch.zeros(7, dtype=torch.int64))
    with pytest.raises(TypeError):
        ROUNDERS[dtype](x, torch.zeros(7))


def test_fp16_overflow_and_subnormals():
    """fp16: between 65504 and 65536 inf is the next value up (probability (|x| - 65504) / 32),
    from 65536 on always inf; below 2^-14 the subnormal ulp 2^-24."""
    top = torch.full((4,), 65504 + 8.0)  # a quarter of the way to inf's pattern
    words_ = torch.tensor([0, (2**22) << 8, ((2**22) - 1) << 8, U32 - 1])  # u = 0, 1/4-, 1/4, max
    assert stochastic_round_fp16(top, words_).tolist() == [math.inf, 65504, math.inf, 65504]
    assert stochastic_round_fp16(torch.tensor([65536.0, 1e30]), torch.tensor([U32 - 1] * 2)).tolist() \
        == [math.inf, math.inf]
    sub = torch.tensor([2.5 * 2**-24])  # halfway between the 2nd and 3rd subnormals
    got = stochastic_round_fp16(sub.expand(2), torch.tensor([(2**23 - 1) << 8, 2**23 << 8]))
    assert got.tolist() == [3 * 2**-24, 2 * 2**-24]
    # a fraction of 2^-20 of the subnormal ulp: the word's top 24 bits decide to the last one
    # (u < 16 * 2^-24 rounds up; a rule reading only the top 16 bits would round every word
    # below 2^16 up, 0xFFFF included)
    fine = torch.tensor([2**-23 + 2**-44]).expand(3)
    got = stochastic_round_fp16(fine, torch.tensor([15 << 8, 16 << 8, 0xFFFF]))
    assert got.tolist() == [3 * 2**-24, 2 * 2**-24, 2 * 2**-24]


def test_bf16_rounds_every_word_to_an_exact_mean():
    """Over all 2^16 low halves of the word the mean of the bf16 results is exactly x: the
    bit trick is unbiased by construction, not only in distribution."""
    x = interesting_fp32(16, seed=11)
    x = x[torch.isfinite(x) & (x.abs() < 3.38e38)][:48]
    r = torch.arange(2**16, dtype=torch.int64)
    got = stochastic_round_bf16(x[:, None].expand(-1, 2**16), r[None, :]).double()
    assert torch.equal(got.sum(1) / 2**16, x.double())


DRAWS = 2**12


def assert_unbiased(rounder, dtype: torch.dtype, x: torch.Tensor, seed: int) -> None:
    """Round every value of ``x`` DRAWS times with Philox words (element k, draw j: counter
    (k, 0, 0, j + 1), as element_randoms lays out steps) and require each sample mean within
    6 binomial standard deviations of x.

    For x between neighbours lo < hi with P(hi) = p = (x - lo) / (hi - lo), the mean of N draws
    is lo + (hi - lo) B/N with B ~ Binomial(N, p): its standard deviation is
    (hi - lo) sqrt(p (1 - p) / N). With x kept at p in [0.09, 0.91] (0.1 to 0.9 before x is
    rounded to fp32), round to nearest (or toward zero) misses by at least 0.09 (hi - lo),
    while 6 sigma is at most
    6 * 0.5 / sqrt(4096) = 0.047 (hi - lo): the bound tells them apart."""
    k = torch.arange(x.numel(), dtype=torch.int64)[:, None]
    j = torch.arange(1, DRAWS + 1, dtype=torch.int64)[None, :]
    r, _, _, _ = philox4x32(seed, k, 0, 0, j)
    mean = rounder(x[:, None].expand(-1, DRAWS), r).double().mean(1)
    x64 = x.double()
    lo = x.to(dtype)
    lo = torch.where(lo.double().abs() > x64.abs(), torch.nextafter(lo, torch.zeros_like(lo)), lo)
    hi = torch.nextafter(lo, torch.where(x < 0, -torch.inf, torch.inf).to(dtype))
    gap = (hi.double() - lo.double()).abs()
    p = (x64 - lo.double()).abs() / gap
    in_range = torch.isfinite(gap) & (p >= 0.09) & (p <= 0.91)
    assert bool(in_range.all()), f"x outside the test's range: {x[~in_range][:4].tolist()}"
    bound = 6 * gap * torch.sqrt(p * (1 - p) / DRAWS)
    err = (mean - x64).abs()
    bad = err > bound
    assert not bool(bad.any()), (f"{int(bad.sum())} of {x.numel()} means off: worst "
                                 f"{float((err / bound).max()):.2f} x the 6-sigma bound")


def spread_in_ulps(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    """n fp32 values at a fraction p in [0.1, 0.9] of a gap of ``dtype``, over many binades
    (subnormals of both formats included; fp16's largest binade, where x + 1 ulp can reach
    65504), both signs."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.float16:
        scales = torch.tensor([2.0**-24, 2.0**-20, 2.0**-14, 2.0**-3, 1.0, 2.0**7, 2.0**15])
    else:
        scales = torch.tensor([2.0**-133, 2.0**-126, 2.0**-40, 1.0, 2.0**60, 2.0**126])
    base = (scales[torch.randint(0, len(scales), (n,), generator=g)]
            * (1 + torch.rand(n, generator=g))).to(dtype)
    lo = base.double()
    gap = torch.nextafter(base, torch.full_like(base, torch.inf)).double() - lo
    p = 0.1 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
    x = (lo + p * gap).float()
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return x * sign


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_stochastic_rounding_is_unbiased_with_philox_words(dtype):
    x = spread_in_ulps(dtype, 256, seed=12)
    assert_unbiased(ROUNDERS[dtype], dtype, x, seed=13)


@pytest.mark.parametrize("dtype", list(ROUNDERS), ids=str)
def test_unbiasedness_check_rejects_round_to_nearest(dtype):
    x = spread_in_ulps(dtype, 64, seed=14)
    with pytest.raises(AssertionError, match="means off"):
        assert_unbiased(lambda v, r: v.to(dtype), dtype, x, seed=13)
    with pytest.raises(AssertionError, match="means off"):  # toward zero: the lower neighbour
        assert_unbiased(lambda v, r: ROUNDERS[dtype](v, torch.full_like(r, 0xFF)), dtype, x,
                        seed=13)


# ---------------------------------------------------------------------------------- quantize

# bitsandbytes 0.50.2, functional.create_dynamic_map(signed=True / False) under torch 2.13
# (run in this repository's venv from the downloaded wheel while writing these tests): the
# sha256 of the 256 fp32 values' bytes, and the bit patterns of a few entries.
BNB_SHA256 = {True: "e732639a65f497b4ad684bb166a4467708255edd5207757de8b8f0c7e1fda89c",
              False: "305f002cc11278fb769d13b25b9fd0c7c83c8402c40a878fe086f4039fde6398"}
BNB_ENTRIES = {  # index -> fp32 bit pattern
    True: {0: 0xBF7E3333, 1: 0xBF7A999A, 127: 0x0, 128: 0x3513A3B7, 129: 0x365A1A94,
           200: 0x3E6F3333, 254: 0x3F7E3333, 255: 0x3F800000},
    False: {0: 0x0, 1: 0x34AE7BAA, 127: 0x3DD40000, 128: 0x3DE26666, 129: 0x3DF0CCCD,
            200: 0x3F1DE666, 254: 0x3F7F199A, 255: 0x3F800000},
}
SIGNS = [True, False]


def fp32_bits(t: torch.Tensor) -> list[int]:
    return [v & 0xFFFFFFFF for v in t.view(torch.int32).tolist()]


@pytest.mark.parametrize("signed", SIGNS)
def test_dynamic_code_is_bitsandbytes_table(signed):
    code = dynamic_code(signed)
    assert code.dtype == torch.float32 and code.shape == (256,)
    assert {i: fp32_bits(code[i:i + 1])[0] for i in BNB_ENTRIES[signed]} == BNB_ENTRIES[signed]
    assert hashlib.sha256(code.numpy().tobytes()).hexdigest() == BNB_SHA256[signed]


@pytest.mark.parametrize("signed", SIGNS)
def test_dynamic_code_structure(signed):
    """Sorted, strictly increasing, 0 and 1 in it, and decade k = 0..6 holding the n_k
    midpoints of [0.1, 1] 10^(k-6) cut in n_k equal parts (n_k = 2^k signed, 2^(k+1)
    unsigned), each within an fp32 rounding or two of the exact rational value."""
    code = dynamic_code(signed)
    assert bool((code[1:] > code[:-1]).all())
    assert 0.0 in code.tolist() and code.max() == 1.0
    assert float(code.min()) == (-0.9929687380790710 if signed else 0.0)
    pos = code[code > 0][:-1].double()  # without the 1
    neg = code[code < 0].double()
    assert neg.numel() == (127 if signed else 0)
    if signed:
        assert torch.equal(torch.sort(-neg).values, pos)
    exact = []
    for k in range(7):
        n = 2 ** (k + (0 if signed else 1))
        exact += [Fraction(10) ** (k - 6) * (Fraction(1, 10) + Fraction(9, 10) * Fraction(2 * j + 1, 2 * n))
                  for j in range(n)]
    exact = torch.tensor([float(e) for e in sorted(exact)], dtype=torch.float64)
    assert pos.shape == exact.shape
    assert bool(((pos - exact).abs() <= 4 * 2.0**-24 * exact).all())


def assert_quantizer_budget(x: torch.Tensor, decoded: torch.Tensor, absmax: torch.Tensor,
                            code: torch.Tensor, block: int = BLOCK) -> None:
    """Per element: |decoded - x| <= (max_gap / 2 + 2^-22) * absmax of its block (the
    budget of fusedopt.reference.quantize and docs/numerics.md)."""
    scale = absmax.double().repeat_interleave(block)[:x.numel()]
    bound = (max_gap(code) / 2 + 2.0**-22) * scale
    err = (decoded.double() - x.double()).abs()
    bad = err > bound
    assert not bool(bad.any()), (f"{int(bad.sum())} elements over the quantizer budget, worst "
                                 f"{float((err / bound).max()):.3f} x")


def moment_like(n: int, signed: bool, seed: int) -> torch.Tensor:
    """Values spread over many decades, with per-block outliers and scales, as Adam's moments
    are: normal times 10^U(-6, 1), squared for the unsigned case."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 10 ** (7 * torch.rand(n, generator=g) - 6)
    x[torch.randint(0, n, (n // 100 + 1,), generator=g)] *= 50
    return x if signed else x * x


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("n", [1, 255, 256, 3 * 256 + 17, 20000])
def test_round_trip_within_the_quantizer_budget(signed, n):
    code = dynamic_code(signed)
    x = moment_like(n, signed, seed=n)
    q, absmax = quantize_blockwise(x, code)
    assert q.dtype == torch.uint8 and q.shape == (n,)
    assert absmax.dtype == torch.float32 and absmax.shape == (-(-n // BLOCK),)
    # every block's scale is its own largest magnitude, the short last block's included
    for b in range(absmax.numel()):
        assert absmax[b] == x[b * BLOCK:(b + 1) * BLOCK].abs().max()
    decoded = dequantize_blockwise(q, absmax, code)
    assert_quantizer_budget(x, decoded, absmax, code)
    # the budget is not loose: some element uses a fair share of it
    scale = absmax.double().repeat_interleave(BLOCK)[:n]
    if n >= 256:
        assert float(((decoded.double() - x.double()).abs() / scale).max()) > max_gap(code) / 8


@pytest.mark.parametrize("signed", SIGNS)
def test_quantizer_budget_rejects_wrong_scales_and_rounding(signed):
    code = dynamic_code(signed)
    x = moment_like(4096, signed, seed=3)
    q, absmax = quantize_blockwise(x, code)
    gap = max_gap(code)
    mutants = {
        "scale off by the largest gap": dequantize_blockwise(q, absmax * (1 + gap), code),
        "neighbouring block's scale": dequantize_blockwise(q, absmax.roll(1), code),
        "rounded toward zero": dequantize_blockwise(
            torch.where(code[q.long()].abs() > (x / absmax.repeat_interleave(BLOCK)).abs(),
                        q.long() - torch.sign(code[q.long()]).long(), q.long()).to(torch.uint8),
            absmax, code),
    }
    for name, decoded in mutants.items():
        with pytest.raises(AssertionError, match="over the quantizer budget"):
            assert_quantizer_budget(x, decoded, absmax, code)


@pytest.mark.parametrize("signed", SIGNS)
def test_quantize_picks_the_nearest_code(signed):
    """The index is the nearest code value to s = x / absmax (up to the fp32 rounding of the
    midpoint, 2^-25), ties to the lower index."""
    code = dynamic_code(signed)
    x = moment_like(50000, signed, seed=4)
    q, absmax = quantize_blockwise(x, code)
    s = (x / absmax.repeat_interleave(BLOCK)[:x.numel()]).double()
    c = code.double()
    i = q.long()
    d = (c[i] - s).abs()
    for other in (torch.clamp(i - 1, min=0), torch.clamp(i + 1, max=255)):
        assert bool((d <= (c[other] - s).abs() + 2.0**-25).all())
    # a value exactly on a midpoint goes to the lower index
    mids = midpoints(code)
    for j in (0, 100, 127, 200, 254):
        block = torch.cat([torch.ones(1), mids[j:j + 1]])  # absmax 1: s is the midpoint itself
        assert quantize_blockwise(block, code)[0][1] == j


@pytest.mark.parametrize("signed", SIGNS)
def test_code_values_round_trip_exactly(signed):
    """x = code value * a power of two is decoded bit for bit, in any order, short blocks too."""
    code = dynamic_code(signed)
    g = torch.Generator().manual_seed(5)
    for scale in (2.0**-7, 1.0, 2.0**40):
        perm = torch.randperm(256, generator=g)
        x = torch.cat([code[perm], code[torch.randperm(256, generator=g)[:40]]]) * scale
        x[290] = scale  # the short last block holds its scale too
        q, absmax = quantize_blockwise(x, code)
        assert absmax.tolist() == [scale, scale]
        assert torch.equal(dequantize_blockwise(q, absmax, code).view(torch.int32),
                           x.view(torch.int32))
        assert torch.equal(code[q.long()], x / scale)


@pytest.mark.parametrize("signed", SIGNS)
def test_zero_blocks_and_zeros(signed):
    code = dynamic_code(signed)
    x = torch.zeros(3 * BLOCK + 5)
    x[BLOCK:2 * BLOCK] = moment_like(BLOCK, signed, seed=6)
    x[BLOCK + 7] = 0.0
    q, absmax = quantize_blockwise(x, code)
    assert absmax[0] == 0 and absmax[2] == 0 and absmax[3] == 0 and absmax[1] > 0
    decoded = dequantize_blockwise(q, absmax, code)
    zero = x == 0
    assert fp32_bits(decoded[zero]) == [0] * int(zero.sum())  # +0.0, never NaN
    assert torch.equal(q[zero], torch.full((int(zero.sum()),), 127 if signed else 0,
                                           dtype=torch.uint8))
    e, a = quantize_blockwise(torch.zeros(0), code)
    assert e.shape == (0,) and a.shape == (0,)
    assert dequantize_blockwise(e, a, code).shape == (0,)


def test_signed_and_unsigned_codes():
    """Negative values: the signed code keeps them (its largest negative is -0.99297, so -absmax
    costs 0.00703 absmax, within the budget); the unsigned code sends them to 0. Non-negative
    data: the unsigned code, twice as fine, halves the worst error."""
    s, u = dynamic_code(True), dynamic_code(False)
    assert max_gap(u) < 0.51 * max_gap(s)
    x = torch.tensor([-2.0, -1.0, 0.5, 2.0])
    q, a = quantize_blockwise(x, s)
    got = dequantize_blockwise(q, a, s)
    assert got[0] == -0.9929687380790710 * 2 and got[3] == 2.0
    qu, au = quantize_blockwise(x, u)
    assert dequantize_blockwise(qu, au, u)[:2].tolist() == [0.0, 0.0]
    v = moment_like(8192, False, seed=7)
    errs = {}
    for name, code in (("signed", s), ("unsigned", u)):
        q, a = quantize_blockwise(v, code)
        errs[name] = float(((dequantize_blockwise(q, a, code) - v).abs()
                            / a.repeat_interleave(BLOCK)).max())
    assert errs["unsigned"] < 0.6 * errs["signed"]


@pytest.mark.parametrize("signed", SIGNS)
def test_non_finite_poisons_its_block_only(signed):
    code = dynamic_code(signed)
    x = moment_like(3 * BLOCK, signed, seed=8)
    x[10] = float("nan")
    x[BLOCK + 3] = float("inf")
    q, absmax = quantize_blockwise(x, code)
    assert torch.isnan(absmax[0]) and torch.isinf(absmax[1]) and torch.isfinite(absmax[2])
    decoded = dequantize_blockwise(q, absmax, code)
    assert bool(torch.isnan(decoded[:2 * BLOCK]).all())
    assert_quantizer_budget(x[2 * BLOCK:], decoded[2 * BLOCK:], absmax[2:], code)


# Relative precision by decade of |x| / absmax (docs/numerics.md's table): the worst relative
# error of a round trip for values in [10^-(d+1), 10^-d] of their block's absmax.
RELATIVE_BY_DECADE = {True: [0.062, 0.11, 0.181, 0.276], False: [0.033, 0.062, 0.11, 0.181]}


@pytest.mark.parametrize("signed", SIGNS)
def test_relative_precision_by_decade(signed):
    code = dynamic_code(signed)
    s = torch.logspace(-4, 0, 255 * 800, dtype=torch.float64).float().reshape(800, 255)
    x = torch.cat([torch.ones(800, 1), s], dim=1).reshape(-1)  # every block's absmax is 1
    q, absmax = quantize_blockwise(x, code)
    assert bool((absmax == 1).all())
    rel = ((dequantize_blockwise(q, absmax, code) - x).abs() / x).double()
    for d, claimed in enumerate(RELATIVE_BY_DECADE[signed]):
        sel = (x >= 10.0 ** -(d + 1)) & (x <= 10.0 ** -d)
        worst = float(rel[sel].max())
        assert worst <= claimed, (d, worst)
        assert worst > 0.9 * claimed, (d, worst)  # the stated figure is tight


def test_quantize_validation():
    code = dynamic_code(True)
    with pytest.raises(TypeError):
        quantize_blockwise(torch.zeros(4, dtype=torch.float64), code)
    with pytest.raises(TypeError):
        quantize_blockwise(torch.zeros(2, 2), code)
    with pytest.raises(ValueError):
        quantize_blockwise(torch.zeros(4), code[:128])
    with pytest.raises(ValueError):
        quantize_blockwise(torch.zeros(4), code, block=0)
    q, a = quantize_blockwise(torch.ones(300), code)
    with pytest.raises(ValueError):
        dequantize_blockwise(q, a[:1], code)
    with pytest.raises(TypeError):
        dequantize_blockwise(q.to(torch.int32), a, code)


def test_adam_moment_budgets():
    """docs/numerics.md's budgets for int8 Adam moments: every step dequantizes m (signed
    code) and v (unsigned code), updates them in fp32 (torch.optim's order) and quantizes
    again; each stored moment is within 0.00704 (m) and 0.00352 (v) of its block's absmax of
    the fp32 value it was quantized from. Against moments kept in fp32 all along, the errors
    of past steps decay with the EMA: at most the per-step budget / (1 - beta) (checked here
    for m; for v, 1 / (1 - beta2) = 1000 makes that bound loose)."""
    sc, uc = dynamic_code(True), dynamic_code(False)
    m_budget, v_budget = 0.00704, 0.00352
    assert max_gap(sc) / 2 + 2.0**-22 <= m_budget and max_gap(uc) / 2 + 2.0**-22 <= v_budget
    beta1, beta2 = 0.9, 0.999
    n = 3 * BLOCK + 17
    g = torch.Generator().manual_seed(9)
    block_scale = 10 ** (4 * torch.rand(-(-n // BLOCK), generator=g) - 4)  # 4 decades
    scale = block_scale.repeat_interleave(BLOCK)[:n]
    m32, v32 = torch.zeros(n), torch.zeros(n)
    mq = quantize_blockwise(torch.zeros(n), sc)
    vq = quantize_blockwise(torch.zeros(n), uc)
    worst_m_drift = 0.0
    for _ in range(30):
        grad = (torch.randn(n, generator=g) * scale).float()
        m = lerp(dequantize_blockwise(*mq, sc), grad, torch.tensor(1 - beta1))
        v = dequantize_blockwise(*vq, uc) * beta2 + ((1 - beta2) * grad) * grad
        mq, vq = quantize_blockwise(m, sc), quantize_blockwise(v, uc)
        for x, q, code, budget in ((m, mq, sc, m_budget), (v, vq, uc, v_budget)):
            err = (dequantize_blockwise(*q, code) - x).abs()
            assert bool((err <= budget * q[1].repeat_interleave(BLOCK)[:n]).all())
        m32 = lerp(m32, grad, torch.tensor(1 - beta1))
        v32 = v32 * beta2 + ((1 - beta2) * grad) * grad
        drift = (dequantize_blockwise(*mq, sc) - m32).abs() / mq[1].repeat_interleave(BLOCK)[:n]
        worst_m_drift = max(worst_m_drift, float(drift.max()))
    assert worst_m_drift <= m_budget / (1 - beta1)
