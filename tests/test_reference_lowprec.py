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

import random

import pytest
import torch

from fusedopt.backends import triton_backend
from fusedopt.reference.philox import _mulhilo32, element_randoms, philox4x32

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
