"""The native core under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds ``fusedopt._C`` with ``-DFUSEDOPT_SANITIZE=address,undefined``
(``-fno-sanitize-recover=all``: the first report aborts), puts it in a copy of the package, and
runs a subset of tests/test_cpu_backend.py and the fuzz driver (tests/fuzz_plan.py) against it in
child processes with the ASan runtime preloaded (python itself is not instrumented). Any report, leak checks aside (CPython keeps its
interned objects to the end), fails the test.

CI runs it (marker ``sanitizer``) with the generic ISA's kernels only
(``-DFUSEDOPT_CPU_ISAS=generic``): the traversal, tables, chunk plan, reductions and the
dtype/mode instantiations are the same code for every ISA, and instrumenting all three took about
6 minutes of build and 6 of tests on 2 cores. ``FUSEDOPT_SANITIZE_ISAS="generic;avx2;avx512"``
with ``FUSEDOPT_SLOW=1`` runs the full version (every ISA, the larger subset). The build
directory ``build/sanitize-<isas>`` is kept, so a rerun only rebuilds what changed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the full subset: every storage combination and mode of adamw, every kernel family on every
#: ISA (test_every_isa_matches_reference: adamw, amsgrad, yogi, adagrad, nsgdm), the prologue,
#: the 16-bit conversions, threads, caches and the many-tensor bucket
FULL_SUBSET = ("adamw or round_trip or prologue or many_tensors or bitwise or isa or table_cache "
               "or lr_tensor or skip")
#: CI's subset: every kernel family once (every_isa_matches_reference), every storage dtype path
#: of the Adam kernel, the prologue with mixed dtypes, 2 threads, the many-tensor bucket, the
#: skip path, 16-bit conversions, table rebuilds and a tensor lr
CI_SUBSET = ("every_isa_matches_reference or (dtypes_match_reference and adamw-) or "
             "round_trip or prologue or many_tensors or two_threads or skip or table_cache or "
             "lr_tensor")


def _compiler_file(name: str) -> str:
    return subprocess.run(["g++", f"-print-file-name={name}"], check=True, capture_output=True,
                          text=True).stdout.strip()


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
    full = os.environ.get("FUSEDOPT_SLOW") == "1"
    isas = os.environ.get("FUSEDOPT_SANITIZE_ISAS", "generic;avx2;avx512" if full else "generic")
    build = ROOT / "build" / f"sanitize-{isas.replace(';', '-')}"
    build.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cmake", str(ROOT), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    "-DFUSEDOPT_SANITIZE=address,undefined", "-DFUSEDOPT_CUDA=off",
                    f"-DFUSEDOPT_CPU_ISAS={isas}",
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
         "-p", "no:cacheprovider", "-k", FULL_SUBSET if full else CI_SUBSET],
        env=env, cwd=ROOT, capture_output=True, text=True)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in tail and "runtime error:" not in tail, tail
    assert " passed" in tail, tail
    # the fuzz driver (bad checkpoints, .data swaps, recycled grads...) under the sanitizers
    fuzz = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz_plan.py"), "--examples",
         "300" if full else "40", "--backend", "cpu"],
        env=env, cwd=ROOT, capture_output=True, text=True)
    tail = (fuzz.stdout + fuzz.stderr)[-6000:]
    assert fuzz.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in tail and "runtime error:" not in tail, tail
    assert "0 crashes" in tail, tail
