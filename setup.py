"""Thin build driver: the Python packages, plus the native core ``fusedopt._C`` (and, when nvcc
is found, the CUDA kernels ``fusedopt._C_cuda``) built by CMakeLists.txt with ninja
(docs/architecture.md#build).

Build dependencies are pip packages only (pyproject.toml: pybind11, cmake, ninja; not torch),
so ``pip install .`` works with build isolation. Environment knobs, all optional:

* ``FUSEDOPT_CUDA=auto|on|off`` (default auto: ``fusedopt._C_cuda`` when nvcc is found)
* ``FUSEDOPT_CUDA_ARCHS``: CUDA architectures (default ``80;90``: sm_80/sm_90 cubins + PTX)
* ``FUSEDOPT_BUILD_DIR``: CMake build directory (default ``build/cmake-<python tag>``, kept
  between builds so a rebuild is incremental)
* ``CMAKE_BUILD_PARALLEL_LEVEL``: compile jobs (default 2)
* ``FUSEDOPT_WERROR=1``: warnings are errors (CI)
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension whose sources CMakeLists.txt knows (setuptools only places the result).
    ``optional``: CMake may not define it (fusedopt._C_cuda without nvcc); then nothing is built
    and setuptools copies nothing."""

    def __init__(self, name: str, optional: bool = False) -> None:
        super().__init__(name, sources=[], optional=optional)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11  # a build dependency (pyproject.toml)

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        tag = sysconfig.get_config_var("SOABI") or f"py{sys.version_info.major}{sys.version_info.minor}"
        build_dir = Path(os.environ.get("FUSEDOPT_BUILD_DIR", ROOT / "build" / f"cmake-{tag}"))
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake", str(ROOT), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFUSEDOPT_CUDA={os.environ.get('FUSEDOPT_CUDA', 'auto')}",
            f"-DFUSEDOPT_WERROR={'ON' if os.environ.get('FUSEDOPT_WERROR') == '1' else 'OFF'}",
        ]
        if "FUSEDOPT_CUDA_ARCHS" in os.environ:
            configure.append(f"-DFUSEDOPT_CUDA_ARCHS={os.environ['FUSEDOPT_CUDA_ARCHS']}")
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(configure, cwd=build_dir, check=True)
        target = ext.name.rsplit(".", 1)[-1]
        if target == "_C_cuda" and "FUSEDOPT_CUDA_BUILT:INTERNAL=ON" not in (
                build_dir / "CMakeCache.txt").read_text():
            return  # no nvcc (or FUSEDOPT_CUDA=off): the CPU-only install
        subprocess.run(["cmake", "--build", ".", "--target", target, "-j", jobs], cwd=build_dir,
                       check=True)


TRITON = ["fusedopt.triton_kernels"] if (ROOT / "triton_kernels").is_dir() else []

setup(
    package_dir={"": "python", "fusedopt.triton_kernels": "triton_kernels"},
    packages=find_packages("python") + TRITON,
    package_data={"fusedopt.bench": ["*.json"]},
    ext_modules=[CMakeExtension("fusedopt._C"),
                 CMakeExtension("fusedopt._C_cuda", optional=True)],
    cmdclass={"build_ext": CMakeBuild},
)
