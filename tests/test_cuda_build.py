"""The CUDA part builds cleanly without a GPU (CI): the host logic is right, nvcc compiles every
kernel with warnings as errors, ptxas reports no register spill, and the module loads.

* The host-side unit test csrc/cuda/tests/device_table_test.cpp (table layout, chunk list,
  64-bit offsets, grid size) is compiled with the host compiler and run: no nvcc needed.
* The module is configured on its own (cmake -S csrc/cuda) with FUSEDOPT_WERROR=ON (nvcc, the
  host compiler and ptxas --warn-on-spills: a warning or a spill fails the build) and
  FUSEDOPT_CUDA_PTXAS_LOG=ON, which keeps each object's ``ptxas -v`` report; every kernel's
  report must show 0 bytes of spill stores and loads. Architectures: FUSEDOPT_CUDA_CHECK_ARCHS,
  default "90" (one architecture keeps the CI build to a few minutes on 2 cores; set "80;90"
  for both). The build directory build/cuda-check-<archs> is kept, so a rerun is incremental
  (the reports are files, so they survive it). Skipped only when nvcc is absent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fusedopt import _stats
from fusedopt.reference.elementwise import MAX_STATES

ROOT = Path(__file__).resolve().parents[1]
CUDA_SRC = ROOT / "csrc" / "cuda"
ARCHS = os.environ.get("FUSEDOPT_CUDA_CHECK_ARCHS", "90")

#: the element-wise algorithms listed in csrc/math/algorithms.h (one X(...) line each)
ELEMENTWISE = re.findall(r"^\s*X\((\w+)\)", (ROOT / "csrc" / "math" / "algorithms.h").read_text(),
                         re.MULTILINE)

#: kernels per architecture, from the manifest (csrc/dispatch/switch.h: 2 fp32, 2 fp64, 8 bf16
#: and 8 fp16 storage combinations) and the compile-time modes of each family
EXPECTED_KERNELS = {
    "adam_kernel": 20 * 5 * 2 * 2,      # x AdamKind x Decay x telemetry
    "elementwise_kernel": 20 * len(ELEMENTWISE) * 2,  # x algorithm x telemetry
    "elementwise_scalars_kernel": len(ELEMENTWISE),  # one per algorithm
    "sgd_kernel": 20 * 2 * 2,           # x momentum direction x telemetry
    "momentum_kernel": 20,
    "norm_partials_kernel": 2,          # fp32 / fp64 opmath
    "norm_finish_kernel": 1,
    "finish_kernel": 1,
    "adam_scalars_kernel": 1,
}


def _nvcc() -> str | None:
    return shutil.which("nvcc") or (
        str(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc") if "CUDA_HOME" in os.environ
        and (Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc").exists() else None)


def _cxx() -> str:
    return os.environ.get("CXX") or shutil.which("c++") or "g++"


# ------------------------------------------------------------------------------ host logic
def test_device_table_host_logic(tmp_path):
    exe = tmp_path / "device_table_test"
    subprocess.run([_cxx(), "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror",
                    f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc' / 'include'}",
                    str(CUDA_SRC / "tests" / "device_table_test.cpp"),
                    str(CUDA_SRC / "device_table.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    checks = int(re.search(r"(\d+) checks, 0 failed", out.stdout).group(1))
    assert checks > 1000  # the coverage checks walk every chunk of several tables


# ------------------------------------------------------------------------------ nvcc build
@pytest.fixture(scope="module")
def cuda_build() -> Path:
    """Configure and build csrc/cuda on its own; returns the build directory."""
    if _nvcc() is None:
        pytest.skip("nvcc not found: the CUDA build check needs the CUDA toolkit")
    import pybind11

    build = ROOT / "build" / f"cuda-check-{ARCHS.replace(';', '-')}"
    build.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(CUDA_SRC), "-B", str(build), "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                 f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DFUSEDOPT_CUDA_ARCHS={ARCHS}",
                 "-DFUSEDOPT_WERROR=ON", "-DFUSEDOPT_CUDA_PTXAS_LOG=ON",
                 f"-DCMAKE_CUDA_COMPILER={_nvcc()}"]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    done = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"CUDA build failed:\n{done.stdout[-20000:]}{done.stderr}"
    return build


def _reports(build: Path) -> list[dict]:
    """One row per (kernel, architecture) from the kept ptxas -v reports."""
    rows = []
    for path in build.rglob("*.ptxas.txt"):
        entry = arch = None
        for line in path.read_text().splitlines():
            m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
            if m:
                entry, arch = m.groups()
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads", line)
            if m and entry is not None:
                rows.append({"kernel": entry, "arch": arch, "object": path.name,
                             "stack": int(m.group(1)), "spill_stores": int(m.group(2)),
                             "spill_loads": int(m.group(3))})
            m = re.search(r"Used (\d+) registers", line)
            if m and entry is not None:
                rows[-1]["registers"] = int(m.group(1))
                entry = None
    return rows


def _family(mangled: str) -> str:
    for name in sorted(EXPECTED_KERNELS, key=len, reverse=True):
        if name in mangled:
            return name
    return mangled


def test_every_kernel_compiles_for_every_arch(cuda_build):
    rows = _reports(cuda_build)
    archs = {f"sm_{a}" for a in ARCHS.split(";")}
    assert {r["arch"] for r in rows} == archs
    for arch in archs:
        counts: dict[str, int] = {}
        for r in rows:
            if r["arch"] == arch:
                family = _family(r["kernel"])
                counts[family] = counts.get(family, 0) + 1
        assert counts == EXPECTED_KERNELS, arch


def test_no_kernel_spills(cuda_build):
    """ptxas -v: 0 bytes of spill stores and loads in every kernel (the update kernels'
    register budget is Note [occupancy], csrc/cuda/launch_config.h)."""
    rows = _reports(cuda_build)
    assert rows
    spilling = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spilling, json.dumps(spilling[:5], indent=1)
    assert all("registers" in r for r in rows)


def _run_with_module(build: Path, code: str) -> str:
    """Run ``code`` in a fresh interpreter with the built module loaded as ``M``."""
    module = next(build.glob("_C_cuda*.so"))
    prelude = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('fusedopt._C_cuda', {str(module)!r})\n"
        "M = importlib.util.module_from_spec(spec); spec.loader.exec_module(M)\n")
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_module_agrees_with_python(cuda_build):
    """Stats slots, table rows and the dtype manifest agree with the Python side and the CPU
    core; the module loads without a GPU."""
    out = json.loads(_run_with_module(cuda_build, (
        "import json\n"
        "combos = [[p, g, s, m] for p in range(4) for g in range(4) for s in range(4)"
        " for m in (False, True) if M.supports_dtypes(p, g, s, m)]\n"
        "print(json.dumps({'slots': M.STATS_SLOTS, 'rows': M.ROWS, 'combos': combos,"
        " 'info': M.build_info()}))\n")))
    assert out["slots"] and all(_stats.SLOT_NAMES[k] == v for k, v in out["slots"].items())
    # param, grad, master, the element-wise state limit's states, step, dtype
    assert out["rows"]["count"] == 5 + MAX_STATES
    assert out["rows"]["step"] == out["rows"]["state0"] + MAX_STATES
    assert len(out["combos"]) == 20
    assert out["info"]["archs"].split() == (
        [f"{a}-real" for a in sorted(ARCHS.split(";"), key=int)]
        + [f"{max(ARCHS.split(';'), key=int)}-virtual"])
    C = pytest.importorskip("fusedopt._C", reason="CPU core not built")
    cpu = [[p, g, s, m] for p in range(4) for g in range(4) for s in range(4)
           for m in (False, True) if C.supports_dtypes(p, g, s, m)]
    assert out["combos"] == cpu


def test_launch_without_device_raises(cuda_build):
    """Without a usable GPU the module says why (runtime_status, which availability() reports)
    and a launch raises a RuntimeError naming the CUDA error (no crash)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = _run_with_module(cuda_build, (
        "import json\n"
        "print(json.dumps(M.runtime_status()))\n"
        "t = M.Table(0, 1, 0, M.CHUNK_SIZE, 0, 0, 0, 0, 0, False, 0)\n"
        "try:\n"
        "    M.sgd_step(t, 0, False, False, False, False, 0)\n"
        "except RuntimeError as e:\n"
        "    print('raised:', e)\n"))
    status, raised = out.splitlines()
    status = json.loads(status)
    assert status["device_count"] == 0 and status["error"]
    assert status["runtime_version"] >= 12000
    assert raised.startswith("raised: fusedopt CUDA:")


def test_import_fusedopt_does_not_load_cuda():
    """`import fusedopt` and asking which backends exist never load the CUDA module."""
    code = ("import sys, fusedopt\n"
            "fusedopt.available_backends('cpu'); fusedopt.backends.availability('cuda')\n"
            "print('fusedopt._C_cuda' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ CUDA 12 module
@pytest.mark.slow
def test_cuda12_module_builds_and_names_its_runtime(tmp_path):
    """The CUDA 12 module of a two-toolkit wheel (Note [CUDA modules]): built by the CUDA 12
    toolkit setup.py would pick (FUSEDOPT_CUDA_TOOLKITS, or /usr/local/cuda-12.x beside the
    PATH's nvcc), named _C_cuda12, with a CUDA 12 runtime in it. One architecture (sm_80)."""
    import runpy

    import pybind11
    import setuptools

    saved = setuptools.setup
    setuptools.setup = lambda **kw: None
    try:
        plan, text = runpy.run_path(str(ROOT / "setup.py"), run_name="x")["toolkit_plan"](
            dict(os.environ, FUSEDOPT_CUDA="auto"))
    finally:
        setuptools.setup = saved
    toolkit = next((t for t in plan if t["major"] == 12), None)
    if toolkit is None:
        pytest.skip(f"no CUDA 12 nvcc found ({text}); PyPI's nvidia-cuda-nvcc-cu12 holds ptxas "
                    "and libnvvm but no nvcc: install a CUDA 12 toolkit, or name it in "
                    "FUSEDOPT_CUDA_TOOLKITS")
    build = tmp_path / "cuda12"
    subprocess.run(["cmake", "-S", str(CUDA_SRC), "-B", str(build), "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", "-DFUSEDOPT_CUDA_ARCHS=80",
                    "-DFUSEDOPT_CUDA_MODULE=_C_cuda12", f"-DCMAKE_CUDA_COMPILER={toolkit['nvcc']}"],
                   check=True, capture_output=True, text=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    done = subprocess.run(["cmake", "--build", str(build), "-j", jobs], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr
    module = next(build.glob("_C_cuda12*.so"))
    code = ("import importlib.util, json\n"
            f"spec = importlib.util.spec_from_file_location('fusedopt._C_cuda12', {str(module)!r})\n"
            "M = importlib.util.module_from_spec(spec); spec.loader.exec_module(M)\n"
            "print(json.dumps([M.runtime_status()['runtime_version'], M.build_info()['nvcc']]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runtime, nvcc = json.loads(out.stdout)
    assert runtime // 1000 == 12 and nvcc.startswith("12.")
