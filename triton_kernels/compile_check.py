"""Compile the kernels for NVIDIA GPUs without a GPU and check what the numerics rules promise.

``python -m fusedopt.triton_kernels.compile_check [--arch 90 80]`` compiles representative
variants of every kernel to PTX and cubin (Triton ships ``ptxas``; no driver is needed) and
reports, per variant: registers, spill bytes (``ptxas -v``), and whether the PTX holds

* no fp32 ``fma`` (every launch passes ``enable_fp_fusion=False``: the reference has none),
* no approximate fp32 division, reciprocal or square root (``div_rn`` / ``sqrt_rn`` are IEEE),
* 128-bit vector loads on the aligned fp32 path (the bandwidth the issue targets needs them).

Exit status 1 when a check fails. It needs compiled-mode kernels, so it refuses to run with
``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget

from . import _common as C

#: kernel arguments that are pointers, by name, and their pointee
_POINTERS = {"ptrs": "*i64", "numels": "*i64", "chunks": "*i64", "stats": "*fp64",
             "partials": "*fp64", "lr_ptr": "*fp32", "scale_ptr": "*fp32",
             "found_inf_ptr": "*fp32"}


@dataclass
class Variant:
    """One compiled instance: kernel, its mode constexprs, whether vector loads are expected."""

    name: str
    kernel: object
    constexprs: dict
    expect_vector_loads: bool = False
    num_warps: int = C.GPU_REDUCE[1]


def _signature(kernel, constexprs: dict) -> dict:
    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name in _POINTERS:
            sig[p.name] = _POINTERS[p.name]
        elif p.annotation:  # tl.float64 hyperparameters
            sig[p.name] = p.annotation
        else:  # sizes, strides and slot indices: Python ints
            sig[p.name] = "i32"
    missing = {n for n, t in sig.items() if t == "constexpr"} - set(constexprs)
    if missing:
        raise ValueError(f"{kernel.__name__}: constexprs missing: {sorted(missing)}")
    return sig


def variants() -> list[Variant]:
    """The variants compiled: every kernel, every Adam variant, each dtype path, modes on/off."""
    from . import adam, elementwise, finish, norm, sgd

    f32, bf16, f64 = tl.float32, tl.bfloat16, tl.float64
    base = dict(CHUNK=C.GPU_CHUNK, BLOCK=C.GPU_REDUCE[0])
    adam_off = dict(DECAY=C.DECAY_DECOUPLED, BIAS_CORRECTION=True, USE_PROLOGUE=False,
                    MAXIMIZE=False, USE_COEF=False, USE_ABC=False, HAS_MASTER=False, LR_FROM_PTR=False, TELEMETRY=False,
                    ALIGNED=True, **base)
    adam_on = dict(adam_off, USE_PROLOGUE=True, MAXIMIZE=True, USE_COEF=True, USE_ABC=True, HAS_MASTER=True, LR_FROM_PTR=True,
                   TELEMETRY=True, DECAY=C.DECAY_COUPLED)
    fp32 = dict(PARAM=f32, GRAD=f32, STATE=f32, OP=f32)
    out = [Variant(f"adam[{v},fp32]", adam._adam_kernel,
                   dict(adam_off, **fp32, VARIANT=code), expect_vector_loads=True)
           for v, code in C.VARIANT_CODES.items()]
    out += [
        Variant("adam[adam,fp32,all modes]", adam._adam_kernel,
                dict(adam_on, **fp32, VARIANT=0, HAS_MASTER=False)),
        Variant("adam[adam,bf16 master,bf16 state,all modes]", adam._adam_kernel,
                dict(adam_on, PARAM=bf16, GRAD=bf16, STATE=bf16, OP=f32, VARIANT=0)),
        Variant("adam[amsgrad,fp64]", adam._adam_kernel,
                dict(adam_off, PARAM=f64, GRAD=f64, STATE=f64, OP=f64, VARIANT=1)),
        Variant("sgd[grad,fp32]", sgd._sgd_kernel,
                dict(fp32, MOMENTUM=False, USE_PROLOGUE=True, MAXIMIZE=False, USE_COEF=True,
                     HAS_MASTER=False, TELEMETRY=False, ALIGNED=True, **base),
                expect_vector_loads=True),
        Variant("sgd[momentum,bf16 master,telemetry]", sgd._sgd_kernel,
                dict(PARAM=bf16, GRAD=bf16, STATE=f32, OP=f32, MOMENTUM=True,
                     USE_PROLOGUE=True, MAXIMIZE=True, USE_COEF=True, HAS_MASTER=True,
                     TELEMETRY=True, ALIGNED=True, **base)),
        Variant("momentum[fp32]", sgd._momentum_kernel,
                dict(GRAD=f32, STATE=f32, OP=f32, USE_PROLOGUE=True, MAXIMIZE=True,
                     USE_COEF=True, ALIGNED=True, **base),
                expect_vector_loads=True),
        Variant("norm partials[fp32,scale]", norm._norm_partials_kernel,
                dict(GRAD=f32, OP=f32, HAS_SCALE=True, ALIGNED=True, **base),
                expect_vector_loads=True),
        Variant("norm partials[bf16]", norm._norm_partials_kernel,
                dict(GRAD=bf16, OP=f32, HAS_SCALE=False, ALIGNED=True, **base)),
        Variant("norm finalize", norm._norm_finalize_kernel,
                dict(COMPUTE_NORM=True, HAS_SCALE=True, HAS_FOUND_INF=True, HAS_CLIP=True,
                     BLOCK=C.FINISH_BLOCK)),
        Variant("finish", finish._finish_kernel,
                dict(USE_PROLOGUE=True, ADVANCE_STEPS=True, N_SUMS=3, LR_FROM_PTR=True,
                     BLOCK=C.FINISH_BLOCK)),
    ]
    def elementwise_variant(name, algo, param, grad, state, on, master=False, **kw):
        """The element-wise kernel specialized to one algorithm (its SCALARS/UPDATE), at the
        launch config of its telemetry (the one config it always runs with)."""
        n_states = len(elementwise.spec.spec(algo).STATES)
        modes = elementwise.modes_for(algo, [state] * n_states, param=param, grad=grad,
                                      use_prologue=on, maximize=on, has_master=master,
                                      lr_from_ptr=on, telemetry=on, aligned=True,
                                      chunk=C.GPU_CHUNK)
        block, warps = elementwise.REDUCE[C.opmath(param)]
        return Variant(f"elementwise[{algo},{name}]", elementwise._elementwise_kernel,
                       dict(modes, BLOCK=block), num_warps=warps, **kw)

    f32t, bf16t, f64t = torch.float32, torch.bfloat16, torch.float64
    for algo in ("adagrad", "lion", "adan", "schedule_free_adamw"):
        out += [
            elementwise_variant("fp32", algo, f32t, f32t, f32t, False, expect_vector_loads=True),
            elementwise_variant("bf16 master,all modes", algo, bf16t, bf16t, f32t, True,
                                master=True),
            elementwise_variant("fp64,all modes", algo, f64t, f64t, f64t, True),
        ]
    for block, warps in C.GPU_TUNE:  # the autotuned configs of the element-wise updates
        out += [Variant(f"adam[adam,{name}] BLOCK={block} warps={warps}", adam._adam_kernel,
                        dict(adam_off, **dtypes, VARIANT=0, BLOCK=block), num_warps=warps,
                        expect_vector_loads=True)
                for name, dtypes in (("fp32", fp32),
                                     ("bf16", dict(PARAM=bf16, GRAD=bf16, STATE=f32, OP=f32)))]
    return out


def _ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers, spill bytes) that ``ptxas -v`` reports for the kernel."""
    ptxas = triton.knobs.nvidia.ptxas.path
    gpu = re.search(r"^\.target (\S+)", ptx, re.M).group(1)  # e.g. sm_90a
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        res = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", f.name, "-o", "/dev/null"],
                             capture_output=True, text=True, check=True)
    regs = max(int(x) for x in re.findall(r"Used (\d+) registers", res.stderr))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", res.stderr))
    return regs, spills


def check(variant: Variant, arch: int) -> dict:
    """Compile one variant for ``sm_<arch>`` and evaluate the checks."""
    src = triton.compiler.ASTSource(fn=variant.kernel,
                                    signature=_signature(variant.kernel, variant.constexprs),
                                    constexprs=variant.constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"enable_fp_fusion": False,
                                       "num_warps": variant.num_warps})
    ptx = compiled.asm["ptx"]
    regs, spills = _ptxas_usage(ptx)
    result = {
        "variant": variant.name, "arch": arch, "registers": regs, "spill_bytes": spills,
        "fp32_fma": len(re.findall(r"\bfma\.\w+\.f32\b", ptx)),
        "approx_fp32": len(re.findall(r"\b(?:div|rcp|sqrt|rsqrt)\.(?:approx|full)[\w.]*f32\b",
                                      ptx)),
        "vector_loads": len(re.findall(r"\bld\.global(?:\.\w+)*\.v4\.b32\b", ptx)),
    }
    result["ok"] = (spills == 0 and result["fp32_fma"] == 0 and result["approx_fp32"] == 0
                    and (result["vector_loads"] > 0 or not variant.expect_vector_loads))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80],
                        help="compute capabilities to compile for (default: 90 80)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if triton.knobs.runtime.interpret:
        print("compile_check needs compiled kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    ok = True
    for arch in args.arch:
        for v in variants():
            r = check(v, arch)
            ok &= r["ok"]
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"sm_{arch} {r['variant']:<45} regs {r['registers']:>3}  spills "
                      f"{r['spill_bytes']}  fp32 fma {r['fp32_fma']}  approx {r['approx_fp32']}"
                      f"  v4 loads {r['vector_loads']:>3}  {'ok' if r['ok'] else 'FAIL'}",
                      flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
