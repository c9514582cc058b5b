"""The native stochastic-rounding math (csrc/math/philox.h, csrc/math/stochastic_round.h; issue
20) is bit for bit the reference's (python/fusedopt/reference/philox.py, rounding.py), through
fusedopt._C's test hooks, before any kernel uses it: Philox words, the counter layout of a
rounding, and the bf16/fp16 roundings over every kind of fp32 value (zeros, subnormals, both
formats' overflow edges, non-finite values) and random words."""
from __future__ import annotations

import pytest
import torch

from fusedopt import _native
from fusedopt.reference import philox, rounding

pytestmark = pytest.mark.skipif(_native.LOAD_ERROR is not None, reason="fusedopt._C not built")

BF16, FP16 = _native.DTYPE_CODES[torch.bfloat16], _native.DTYPE_CODES[torch.float16]


def _words(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**32, (n,), generator=gen, dtype=torch.int64)


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32, 0xDEADBEEFCAFEF00D, 2**64 - 1])
def test_philox_words_are_the_references(seed):
    c = [_words(2000, s) for s in range(4)]
    for col in c:
        col[:4] = torch.tensor([0, 2**31, 2**32 - 1, 1])
    want = philox.philox4x32(seed, *c)
    got = _native.native().philox4x32(seed, *(col.tolist() for col in c))
    for w, g in zip(want, got):
        assert w.tolist() == list(g)


def test_element_randoms_follow_the_counter_layout():
    C = _native.native()
    for seed, pid, step, offset in [(7, 0, 1, 0), (2**63 + 5, 17, 2**31 + 3, 2**32 - 10),
                                    (123, 2**32 - 1, 2**32 - 1, 5)]:
        want = philox.element_randoms(seed, pid, step, 300, offset=offset)
        assert C.element_randoms(seed, pid, step, offset, 300) == want.tolist()


def _fp32_values() -> torch.Tensor:
    """Random bit patterns (every exponent, both signs, subnormals) and the edge values."""
    pats = _words(20000, 11)
    edges = torch.tensor([0.0, -0.0, 1.0, -1.0, 1.5, 2.0**-149, 2.0**-126, 2.0**-24, 2.0**-25,
                          3 * 2.0**-26, 2.0**-14, 65504.0, 65519.0, 65520.0, 65535.0, 65536.0,
                          1e6, -65510.0, 3.3895e38, -3.3895e38, 3.4028235e38, float("inf"),
                          float("-inf"), float("nan")], dtype=torch.float32)
    edge_bits = edges.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return torch.cat([pats, edge_bits])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_is_the_references_bit_for_bit(dtype):
    bits = _fp32_values()
    x = (bits & 0xFFFFFFFF).to(torch.int64)
    x = torch.where(x >= 2**31, x - 2**32, x).to(torch.int32).view(torch.float32)
    ref = rounding.stochastic_round_bf16 if dtype == torch.bfloat16 else \
        rounding.stochastic_round_fp16
    C = _native.native()
    for seed in range(3):
        r = _words(len(x), 100 + seed)
        r[:256] = torch.arange(0, 2**32, 2**24)  # the words' whole range, evenly
        want = ref(x, r)
        got = torch.tensor(C.stochastic_round(bits.tolist(), r.tolist(),
                                              BF16 if dtype == torch.bfloat16 else FP16),
                           dtype=torch.int32).to(torch.int16).view(dtype)
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(got), nan)
        same = want[~nan].view(torch.int16) == got[~nan].view(torch.int16)
        assert bool(same.all()), (x[~nan][~same][:5], want[~nan][~same][:5],
                                  got[~nan][~same][:5])


def test_a_round_to_nearest_mutant_fails_the_comparison():
    """The comparison has teeth: round to nearest (torch's .to) differs from the reference's
    stochastic rounding on most values that are not representable."""
    x = torch.randn(1000)
    r = _words(1000, 5)
    want = rounding.stochastic_round_bf16(x, r)
    assert (x.to(torch.bfloat16) != want).float().mean() > 0.2
