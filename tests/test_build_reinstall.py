"""Two real pip builds in one checkout (slow: a native build; seconds more with ccache warm).

At 707bfd3, ``pip install .`` then ``pip wheel --no-deps -w dist .`` in the same checkout failed
in configure: the kept CMake folder named the ninja of the first build's deleted isolation
environment. And a wheel packed whatever an earlier build had left in ``build/lib.*`` (an old
``_C_cuda`` after ``FUSEDOPT_CUDA=off``). The cheap versions are in tests/test_build_dir.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_install_then_wheel_in_one_checkout(tmp_path):
    src, venv = tmp_path / "src", tmp_path / "venv"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", "build", "dist", "*.so", "__pycache__", "*.egg-info",
        ".pytest_cache", ".hypothesis", "results", "_build_summary.json"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    env = {**os.environ, "FUSEDOPT_CUDA": "off", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    subprocess.run([*pip, "install", "--no-deps", "."], cwd=src, env=env, check=True)

    # What a CUDA build or an older tree left behind in build/lib.*.
    (lib,) = (src / "build").glob("lib.*")
    suffix = next((lib / "fusedopt").glob("_C.*")).name[len("_C"):]
    (lib / "fusedopt" / f"_C_cuda{suffix}").write_bytes(b"an earlier build's module")
    (lib / "fusedopt" / "removed_since.py").write_text("")

    subprocess.run([*pip, "wheel", "--no-deps", "-w", "dist", "."], cwd=src, env=env,
                   check=True)
    (wheel,) = (src / "dist").glob("fusedopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"fusedopt/_C{suffix}" in names
    assert "fusedopt/_build_summary.json" in names
    assert not [n for n in names if "_C_cuda" in n or "removed_since" in n], names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    # One keyed build directory served both builds (same interpreter, tools and options).
    assert len(list((src / "build").glob("cmake-*"))) == 1
