"""The CUDA kernels run on the CPU emulator (Note [CUDA emulation], csrc/cuda/emulation/):
the same csrc/cuda sources, compiled by the host compiler, with every thread a fiber and
__syncthreads / warp shuffles keeping their CUDA meaning. No GPU and no CUDA toolkit needed.

The emulated module replaces ``fusedopt._C_cuda`` behind the ``cuda`` backend, on CPU tensors,
and the checks of tests/cuda_checks.py run as they do on a GPU: conformance with the reference
within the error budget, bitwise equality with the CPU core where no reduction is involved,
run-to-run determinism, misaligned views, skip-on-inf, more than 1,000 tensors. This tests the
kernels' logic (tables, chunking, vector and element paths, reductions, finish, skip) and the
Python side; it cannot test nvcc's code generation or real GPU concurrency (GPU tests:
tests/test_cuda_backend.py).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedopt import _native_cuda
from fusedopt.backends import cuda_backend
from fusedopt.registry import ALGORITHMS

import cuda_checks as checks

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cpu"


@pytest.fixture(scope="module")
def emulated_module():
    """Build (incrementally: build/cuda-emulation is kept) and load _C_cuda_emulated."""
    import pybind11

    build = ROOT / "build" / "cuda-emulation"
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cmake", "-S", str(ROOT / "csrc" / "cuda" / "emulation"), "-B", str(build),
                    "-G", "Ninja", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                   check=True, capture_output=True, text=True)
    done = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr
    path = next(build.glob("_C_cuda_emulated*.so"))
    spec = importlib.util.spec_from_file_location("fusedopt._C_cuda_emulated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _cuda_backend_on_emulator(emulated_module, monkeypatch):
    """The cuda backend, with the emulated module, on CPU tensors (host memory, stream 0)."""
    monkeypatch.setattr(_native_cuda, "_module", emulated_module)
    monkeypatch.setattr(_native_cuda, "_GRAD_TABLES", {})
    monkeypatch.setattr(_native_cuda, "_EMPTY", {})
    monkeypatch.setattr(_native_cuda, "stream_handle", lambda device: 0)
    monkeypatch.setattr(_native_cuda, "device_index", lambda device: 0)
    monkeypatch.setattr(_native_cuda, "_check_not_capturing", lambda what: None)
    monkeypatch.setattr(_native_cuda, "_upload", lambda table, device: torch.frombuffer(
        bytearray(table), dtype=torch.int64).clone())
    monkeypatch.setattr(cuda_backend, "availability", lambda: (True, "CPU emulation"))
    monkeypatch.setattr(cuda_backend, "supports", lambda device: True)
    monkeypatch.setattr(cuda_backend, "UNVALIDATED", None)


#: one dtype/mode per row of the conformance matrix that exercises a different kernel path
EMULATED_CASES = [
    ("fp32", "plain"), ("fp32", "clip"), ("fp32", "telemetry"), ("fp32", "tensor_lr"),
    ("bf16", "amp"), ("bf16_master", "clip_amp"), ("fp16_master_fp32grad", "clip_amp"),
    ("fp64", "lossscaler"), ("fp32_bf16state", "plain"),
]


@pytest.mark.parametrize("dt,mode", EMULATED_CASES)
@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_matches_reference(algo, dt, mode):
    if not ALGORITHMS[algo].has_moments and "state" in dt:
        pytest.skip("no moments: the state dtype does not apply")
    checks.check_conformance(algo, dt, mode, device=DEVICE, steps=4)


@pytest.mark.parametrize("mode", ["clip_amp", "telemetry"])
@pytest.mark.parametrize("algo", ["adamw", "adagrad", "iansgd", "nsgdm"])
def test_chunk_boundaries(algo, mode):
    """Several chunks per block: the persistent loop, per-chunk sums, reused shared memory."""
    checks.check_conformance(algo, "fp32", mode, device=DEVICE, shapes="chunks", steps=2)


@pytest.mark.parametrize("algo", ["adamw", "nsgdm"])
def test_fp64_norms_over_many_elements(algo):
    """fp64 params: the norm (and NSGDm's momentum norm) over hundreds of thousands of elements
    is compensated, so the clip coefficient and the normalizers match the fp64 reference."""
    checks.check_conformance(algo, "fp64", "clip", device=DEVICE, shapes="chunks", steps=3)


@pytest.mark.parametrize("dt,mode", [("fp32", "plain"), ("bf16_master", "amp"),
                                     ("fp64", "telemetry"), ("fp32", "clip")])
@pytest.mark.parametrize("algo", ["adamw", "amsgrad", "adabelief", "yogi", "rmsprop",
                                  "adagrad", "nsgdm", "iansgd"])
def test_matches_cpu_core(algo, dt, mode):
    checks.check_matches_cpu_core(algo, dt, mode, device=DEVICE)


def test_run_to_run_bitwise():
    checks.check_determinism(device=DEVICE)


def test_more_than_1000_tensors():
    checks.check_many_tensors(device=DEVICE, count=1100)


def test_misaligned_views_take_the_element_path():
    checks.check_misaligned_views(device=DEVICE)


@pytest.mark.parametrize("algo", ["adamw", "adaml", "adagrad", "adagrad_norm", "iansgd",
                                  "nsgdm"])
def test_skip_on_inf_leaves_everything(algo):
    checks.check_skip_leaves_everything(algo, device=DEVICE)


def test_compiled_training_step_fullgraph():
    checks.check_compiled_step(device=DEVICE)
