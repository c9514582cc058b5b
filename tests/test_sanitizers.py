"""The native core under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds ``fusedopt._C`` with ``-DFUSEDOPT_SANITIZE=address,undefined`` (every ISA's kernels,
``-fno-sanitize-recover=all``: the first report aborts), puts it in a copy of the package, and
runs a subset of tests/test_cpu_backend.py against it in a child process with the ASan runtime
preloaded (python itself is not instrumented). Any report, leak checks aside (CPython keeps its
interned objects to the end), fails the test.

CI (2 cores): ``FUSEDOPT_SLOW=1 python -m pytest tests/test_sanitizers.py`` (marked ``slow`` and
``sanitizer``). The build directory ``build/sanitize`` is kept, so a rerun only rebuilds what
changed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: every storage combination and mode of adamw, every kernel family on every ISA
#: (test_every_isa_matches_reference: adamw, amsgrad, yogi, adagrad, nsgdm), the prologue, the
#: 16-bit conversions, threads, caches and the many-tensor bucket
SUBSET = ("adamw or round_trip or prologue or many_tensors or bitwise or isa or table_cache "
          "or lr_tensor or skip")


def _compiler_file(name: str) -> str:
    return subprocess.run(["g++", f"-print-file-name={name}"], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.sanitizer
@pytest.mark.skipif(shutil.which("g++") is None or shutil.which("cmake") is None
                    or shutil.which("ninja") is None, reason="needs g++, cmake and ninja")
def test_conformance_subset_clean_under_asan_ubsan(tmp_path):
    import pybind11

    libasan = _compiler_file("libasan.so")
    if not os.path.exists(libasan):
        pytest.skip("the compiler has no ASan runtime")
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "python" / "fusedopt", pkg / "fusedopt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    build = ROOT / "build" / "sanitize"
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cmake", str(ROOT), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    "-DFUSEDOPT_SANITIZE=address,undefined", "-DFUSEDOPT_CUDA=off",
                    f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={pkg / 'fusedopt'}",
                    f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"], cwd=build, check=True)
    subprocess.run(["cmake", "--build", ".", "--target", "_C", "-j",
                    os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")], cwd=build, check=True)

    env = {**os.environ,
           "PYTHONPATH": str(pkg),
           "LD_PRELOAD": libasan,
           "ASAN_OPTIONS": "detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    probe = subprocess.run(
        [sys.executable, "-c", "import fusedopt._C as C; print(C.__file__); "
         "print(C.build_info()['flags'])"],
        env=env, check=True, capture_output=True, text=True).stdout
    assert str(pkg) in probe and "-fsanitize=address,undefined" in probe, probe
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_cpu_backend.py"), "-q",
         "-p", "no:cacheprovider", "-k", SUBSET],
        env=env, cwd=ROOT, capture_output=True, text=True)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in tail and "runtime error:" not in tail, tail
    assert " passed" in tail, tail
