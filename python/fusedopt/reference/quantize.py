"""Blockwise dynamic 8-bit quantization of optimizer states (Dettmers et al. 2022, "8-bit
Optimizers via Block-wise Quantization"; the "dynamic tree" data type of Dettmers 2016,
"8-Bit Approximations for Parallelism in Deep Learning").

A state tensor is cut into blocks of ``block`` consecutive elements (256; the last block may
be shorter, and a block never spans two tensors: the caller quantizes one tensor at a time, so
a shard of a tensor keeps its own blocks and the precision does not depend on how tensors are
packed). Each block keeps one fp32 scale, its largest magnitude ``absmax``, and one byte per
element: the index of the code-book value nearest to ``x / absmax``. Decoding is
``code[index] * absmax``. A block-local scale confines an outlier's damage to its own 256
elements, and the non-linear code spends its 256 values where moments live: spread over seven
decades below absmax, with the finest steps close to absmax.

The code book (:func:`dynamic_code`), as bitsandbytes builds it for its 8-bit optimizers
(``create_dynamic_map``; ``dynamic`` for the first moment, ``udynamic`` for the second):
decade ``k = 0 .. 6`` covers ``[0.1, 1] * 10^(k - 6)`` and holds ``n_k`` values, the midpoints
of ``n_k`` equal parts of that interval, with ``n_k = 2^k`` for the signed code (and their
negatives) and ``n_k = 2^(k + 1)`` for the unsigned one (the sign bit spent on the fraction:
moments of the second kind are never negative). With 0 and 1 that makes 256 values: signed,
127 positive, 127 negative, 0 and 1, from -0.99297 to 1, the smallest magnitude 5.5e-7;
unsigned, 254 positive, 0 and 1, the smallest 3.25e-7. In the tree type's bit layout this is
a sign bit, then a run of zero bits counting decades down from the top, a 1 bit ending the
run, and the remaining bits indexing the linear fraction: each decade lower has one bit fewer
for its fraction. The values are computed in fp32 exactly as bitsandbytes computes them
(``torch.linspace(0.1, 1, n_k + 1)`` in fp32, fp32 midpoints, times the decade's power of ten
as an fp32 product), so the tables are bitwise bitsandbytes' (verified against bitsandbytes
0.50.2's ``create_dynamic_map`` under torch 2.13: tests/test_reference_lowprec.py keeps their
sha256). The kernels never recompute the table: it is data they read.

Rounding (every backend follows it, so quantizing the same fp32 values gives the same bytes):

* ``s = x / absmax`` in fp32 (IEEE division, so ``|s| <= 1`` and ``s = +-1`` exactly at the
  block's largest element); bitsandbytes' default backend multiplies by ``1 / absmax``
  instead, which can pick the neighbouring code where ``s`` sits within an ulp of a midpoint;
* the index is the number of midpoints ``m_j = fl(fl(code[j] + code[j + 1]) / 2)`` (fp32,
  255 of them) strictly below ``s``: the nearest code value, and on a tie (``s`` exactly on a
  midpoint) the lower index, i.e. the smaller code value (``torch.bucketize``'s rule);
* a block whose elements are all zero has ``absmax = 0``; its elements take the code of 0 and
  decode to 0 (``s`` is taken as 0, not 0/0);
* a block holding inf or NaN has ``absmax`` inf or NaN, every element takes the code of 0 and
  decodes to ``0 * absmax = NaN``: a non-finite moment poisons its block, as a non-finite fp32
  moment poisons its own param's update;
* for the unsigned code, a negative ``x`` takes the code of 0 (its nearest value).

Error budget, per element, with ``gap`` the largest distance between neighbouring code values
(:func:`max_gap`: 0.0140625 signed, 0.0070313 unsigned)::

    |dequantize(quantize(x)) - x| <= (gap / 2 + 2^-22) * absmax of the element's block

``gap / 2`` is the nearest-value rounding, and 2^-22 covers the three fp32 roundings
(``s``, the midpoint, the decoded product, each at most 2^-24 relative to a value of magnitude
at most absmax).
"""
from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 256
CODE_SIZE = 256
DECADES = 7


def dynamic_code(signed: bool) -> Tensor:
    """The 256 sorted fp32 values of the dynamic tree code (the module docstring): in [-1, 1]
    for ``signed``, in [0, 1] otherwise; 0 and 1 are both in it."""
    extra_bit = 0 if signed else 1
    parts = [torch.zeros(1), torch.ones(1)]
    for k in range(DECADES):
        n = 2 ** (k + extra_bit)
        edges = torch.linspace(0.1, 1, n + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        decade = mids * 10 ** (k - (DECADES - 1))
        parts.append(decade)
        if signed:
            parts.append(-decade)
    code = torch.sort(torch.cat(parts).to(torch.float32)).values
    assert code.numel() == CODE_SIZE
    return code


def max_gap(code: Tensor) -> float:
    """The largest distance between neighbouring values of a sorted code book."""
    return float((code[1:].double() - code[:-1].double()).max())


def midpoints(code: Tensor) -> Tensor:
    """The 255 fp32 decision points ``fl(fl(code[j] + code[j + 1]) / 2)`` of the rounding."""
    return (code[:-1] + code[1:]) / 2


def _check(code: Tensor, block: int) -> None:
    if code.dtype != torch.float32 or code.shape != (CODE_SIZE,):
        raise ValueError(f"fusedopt: the code book must be {CODE_SIZE} fp32 values, got "
                         f"{code.dtype} of shape {tuple(code.shape)}")
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ValueError(f"fusedopt: the quantization block must be a positive int, got {block!r}")


def n_blocks(numel: int, block: int = BLOCK) -> int:
    """The number of blocks (scales) of a tensor of ``numel`` elements."""
    return -(-numel // block)


def quantize_blockwise(x: Tensor, code: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """``(indices, absmax)``: the uint8 code index of every element of the fp32 1-D tensor
    ``x`` and the fp32 absmax of every block of ``block`` elements (the last may be short),
    by the rounding rules of the module docstring."""
    _check(code, block)
    if x.dtype != torch.float32 or x.dim() != 1:
        raise TypeError(f"fusedopt: quantize_blockwise takes a 1-D fp32 tensor, got {x.dtype} "
                        f"with {x.dim()} dims")
    n = x.numel()
    nb = n_blocks(n, block)
    padded = torch.zeros(nb * block, dtype=torch.float32, device=x.device)
    padded[:n] = x  # zeros never raise a block's absmax
    blocks = padded.view(nb, block)
    absmax = torch.amax(torch.abs(blocks), dim=1) if nb else padded.new_zeros(0)
    scale = absmax[:, None]
    usable = torch.isfinite(scale) & (scale > 0)
    s = torch.where(usable, blocks / torch.where(usable, scale, 1.0), 0.0)
    index = torch.bucketize(s, midpoints(code).to(x.device), right=False)
    return index.reshape(-1)[:n].to(torch.uint8), absmax


def dequantize_blockwise(indices: Tensor, absmax: Tensor, code: Tensor,
                         block: int = BLOCK) -> Tensor:
    """The fp32 values ``code[index] * absmax`` of a tensor quantized by
    :func:`quantize_blockwise` (one fp32 rounding per element)."""
    _check(code, block)
    if indices.dtype != torch.uint8 or indices.dim() != 1:
        raise TypeError(f"fusedopt: dequantize_blockwise takes 1-D uint8 indices, got "
                        f"{indices.dtype} with {indices.dim()} dims")
    n = indices.numel()
    if absmax.dtype != torch.float32 or absmax.shape != (n_blocks(n, block),):
        raise ValueError(f"fusedopt: {n} elements in blocks of {block} need "
                         f"{n_blocks(n, block)} fp32 scales, got {absmax.dtype} of shape "
                         f"{tuple(absmax.shape)}")
    scale = absmax.repeat_interleave(block)[:n]
    return code.to(indices.device)[indices.to(torch.int64)] * scale
