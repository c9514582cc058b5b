"""One CUDA module per CUDA major in one install, picked at run time by the driver (Note [CUDA
modules] in fusedopt._native_cuda), and setup.py's plan of which toolkits to build with.

Pure Python and fast: fake driver versions, fake module files, fake ``nvcc --version``. The
build of a CUDA 12 module itself is tests/test_cuda_build.py's slow check.
"""
from __future__ import annotations

import os
import runpy
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from fusedopt import _native_cuda as nc

ROOT = Path(__file__).resolve().parents[1]
BOTH = [(13, "_C_cuda13"), (12, "_C_cuda12")]


# ------------------------------------------------------------------------------ run-time choice
@pytest.mark.parametrize("driver, picked", [
    (13000, "_C_cuda13"),   # R580: CUDA 13.0
    (13020, "_C_cuda13"),
    (12090, "_C_cuda12"),   # R575
    (12020, "_C_cuda12"),   # R535
    (12000, "_C_cuda12"),   # R525: the oldest driver of CUDA 12
])
def test_newest_module_the_driver_runs(driver, picked):
    name, why = nc.choose(BOTH, driver)
    assert name == picked, why


def test_driver_too_old_for_every_module_says_what_is_needed():
    name, why = nc.choose(BOTH, 11080)  # R520: CUDA 11.8
    assert name is None
    assert "CUDA 11.8" in why and "525.60.13" in why and "update the driver" in why
    name, why = nc.choose([(13, "_C_cuda13")], 12080)  # a CUDA-13-only build on R570
    assert name is None and "580.65.06" in why


def test_no_driver_and_no_module_are_reported():
    name, why = nc.choose(BOTH, None, "no CUDA driver (libcuda.so.1 cannot be loaded: x)")
    assert name is None and why.startswith("no CUDA driver")
    name, why = nc.choose([], 13000)
    assert name is None and "no CUDA module was built" in why


def test_forced_module():
    assert nc.choose(BOTH, 13000, forced="_C_cuda12")[0] == "_C_cuda12"
    assert nc.choose(BOTH, None, forced="_C_cuda12")[0] == "_C_cuda12"
    name, why = nc.choose([(13, "_C_cuda13")], 13000, forced="_C_cuda12")
    assert name is None and "not built" in why


def test_requirements_per_major():
    assert "525.60.13" in nc.requirement(12) and "CUDA >= 12.0" in nc.requirement(12)
    assert "580.65.06" in nc.requirement(13) and "CUDA >= 13.0" in nc.requirement(13)


def test_built_modules_found_by_file_name(tmp_path, monkeypatch):
    """Only _C_cuda<digits> extension files count (not the emulator, not a .py)."""
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("_C_cuda12", "_C_cuda13", "_C_cuda_emulated", "_C"):
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
    (tmp_path / "_C_cuda11.py").write_text("")
    monkeypatch.setattr(nc, "__file__", str(tmp_path / "_native_cuda.py"))
    assert nc.built_modules() == BOTH


def test_no_driver_here_is_a_clear_message():
    """This machine (CI) has no libcuda.so.1: the loader says so instead of failing later."""
    driver, error = nc.driver_version()
    if driver is not None:
        pytest.skip(f"a CUDA driver is installed (CUDA {nc.cuda_version_text(driver)})")
    assert error.startswith("no CUDA driver") and "libcuda.so.1" in error
    code = ("import fusedopt._native_cuda as nc\n"
            "try:\n    nc.native()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "FUSEDOPT_CUDA_MODULE": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no usable fusedopt CUDA module: ")
    if nc.built_modules():
        assert "no CUDA driver" in out.stdout


# ------------------------------------------------------------------------------ build plan
@pytest.fixture(scope="module")
def setup_py():
    saved = setuptools.setup
    setuptools.setup = lambda **kw: None
    try:
        return runpy.run_path(str(ROOT / "setup.py"), run_name="fusedopt_setup")
    finally:
        setuptools.setup = saved


def _fake_nvcc(path: Path, release: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _versions(cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def test_plan_one_module_per_major(setup_py, tmp_path):
    plan_of = setup_py["toolkit_plan"]
    path13 = _fake_nvcc(tmp_path / "bin" / "nvcc", "13.0")
    for version in ("12.4", "12.8", "13.0", "11.8"):
        _fake_nvcc(tmp_path / "local" / f"cuda-{version}" / "bin" / "nvcc", version)
    env = {"PATH": str(tmp_path / "bin")}
    plan, text = plan_of(env, _versions, installed=str(tmp_path / "local" / "cuda-*"))
    # The PATH's nvcc first; the newest CUDA 12 found beside it; 13.0 twice is built once;
    # CUDA 11 is not supported.
    assert [(t["module"], t["version"]) for t in plan] == [("_C_cuda13", "13.0"),
                                                          ("_C_cuda12", "12.8")]
    assert plan[0]["nvcc"] == path13 and "cuda-12.8" in plan[1]["nvcc"]
    assert "CUDA 11.8" in text and "_C_cuda12" in text


def test_plan_from_the_option(setup_py, tmp_path):
    plan_of = setup_py["toolkit_plan"]
    home12 = tmp_path / "cuda-12.6"
    _fake_nvcc(home12 / "bin" / "nvcc", "12.6")
    env = {"PATH": "", "FUSEDOPT_CUDA_TOOLKITS": str(home12)}
    plan, _ = plan_of(env, _versions, installed=str(tmp_path / "none-*"))
    assert [(t["module"], t["version"]) for t in plan] == [("_C_cuda12", "12.6")]
    with pytest.raises(SystemExit, match="no nvcc"):
        plan_of({"FUSEDOPT_CUDA_TOOLKITS": str(tmp_path / "missing")}, _versions)


def test_plan_off_auto_on(setup_py, tmp_path):
    plan_of = setup_py["toolkit_plan"]
    none = str(tmp_path / "none-*")
    assert plan_of({"FUSEDOPT_CUDA": "off", "PATH": ""}, _versions, installed=none) == (
        [], "off (FUSEDOPT_CUDA=off)")
    plan, text = plan_of({"PATH": ""}, _versions, installed=none)
    assert plan == [] and "nvcc not found" in text
    with pytest.raises(SystemExit, match="FUSEDOPT_CUDA=on"):
        plan_of({"FUSEDOPT_CUDA": "on", "PATH": ""}, _versions, installed=none)


def test_key_names_every_toolkit(setup_py):
    key = setup_py["build_key"]
    found = {"cmake": None, "ninja": None, "cxx": None, "ccache": None}
    one = [{"nvcc": "/a/nvcc", "major": 13, "version": "13.0", "module": "_C_cuda13"}]
    two = one + [{"nvcc": "/b/nvcc", "major": 12, "version": "12.8", "module": "_C_cuda12"}]
    versions = {"/a/nvcc": "release 13.0", "/b/nvcc": "release 12.8"}
    dirs = {setup_py["build_dir_for"](key({}, found, "3", lambda c: versions.get(c[0], ""), t))
            for t in ([], one, two)}
    assert len(dirs) == 3
