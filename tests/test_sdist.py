"""The source distribution builds the native modules on its own: it carries CMakeLists.txt,
every tracked file under csrc/ (C++, CUDA, headers, the CMake manifest of generated sources,
the CUDA build's helper script) and triton_kernels/, the license and the README, and no
compiled file (MANIFEST.in).

Fast (``setup.py sdist`` only packs files: well under a second here); the egg-info goes to a
temporary folder so the checkout is not touched.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp),
                    "sdist", "-d", str(tmp), "--formats=gztar"],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    (archive,) = tmp.glob("fusedopt-*.tar.gz")
    with tarfile.open(archive) as tar:
        # "fusedopt-0.1.0/csrc/binding.cpp" -> "csrc/binding.cpp"
        return {m.name.split("/", 1)[1] for m in tar.getmembers()
                if m.isfile() and "/" in m.name}


def _tracked(*paths: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def test_sdist_has_every_native_source(sdist_names):
    tracked = _tracked("csrc", "triton_kernels")
    assert any(p.endswith(".cu") for p in tracked) and any(p.endswith(".h") for p in tracked)
    missing = sorted(set(tracked) - sdist_names)
    assert not missing, f"not in the sdist (MANIFEST.in): {missing}"
    for name in ("CMakeLists.txt", "csrc/cuda/CMakeLists.txt", "csrc/cuda/sources.cmake",
                 "csrc/build_info.h.in", "setup.py", "pyproject.toml", "LICENSE", "README.md",
                 "python/fusedopt/__init__.py", "python/fusedopt/bench/workloads.json"):
        assert name in sdist_names, name


def test_sdist_has_no_build_outputs_or_tests(sdist_names):
    assert not [n for n in sdist_names if n.endswith((".so", ".pyc", ".o"))]
    assert not [n for n in sdist_names if n.startswith(("build/", "tests/", "bench/results"))]
