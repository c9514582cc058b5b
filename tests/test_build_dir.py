"""setup.py's build directory (Note [build dir]) and what a build leaves for the wheel.

Cheap checks (CI): the key's logic, and CMake *configure* runs (seconds, no compile) that
reproduce the stale cache: a build directory configured with the ninja of a pip build-isolation
environment that was deleted afterwards (what ``pip install .`` then ``pip wheel .`` in the same
checkout did at 707bfd3), and a stale ``_C_cuda`` left for a ``FUSEDOPT_CUDA=off`` build.
The end-to-end version, two real pip builds in one checkout, is tests/test_build_reinstall.py
(slow).
"""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    """setup.py's namespace, without running setup()."""
    saved = setuptools.setup
    setuptools.setup = lambda **kw: None
    try:
        return runpy.run_path(str(ROOT / "setup.py"), run_name="fusedopt_setup")
    finally:
        setuptools.setup = saved


def _versions(table):
    return lambda cmd: table.get(Path(cmd[0]).name, "")


FOUND = {"cmake": "/tmp/pip-build-env-a/overlay/bin/cmake",
         "ninja": "/tmp/pip-build-env-a/overlay/bin/ninja",
         "cxx": "/usr/bin/c++", "ccache": None}
VERSIONS = {"cmake": "cmake version 4.4.5", "ninja": "1.13.2", "c++": "g++ 12.2.0"}


def test_key_ignores_tool_paths_but_not_versions_or_options(setup_py):
    key, build_dir_for = setup_py["build_key"], setup_py["build_dir_for"]
    env = {"FUSEDOPT_CUDA": "off"}
    a = build_dir_for(key(env, FOUND, "3.1.0", _versions(VERSIONS)))
    # Another isolated environment, same versions: the same directory (incremental rebuild).
    other_env = {**FOUND, "cmake": "/tmp/pip-build-env-b/overlay/bin/cmake",
                 "ninja": "/tmp/pip-build-env-b/overlay/bin/ninja"}
    assert build_dir_for(key(env, other_env, "3.1.0", _versions(VERSIONS))) == a
    assert build_dir_for(key({}, FOUND, "3.1.0", _versions(VERSIONS))) == \
        build_dir_for(key({"FUSEDOPT_CUDA": "auto"}, FOUND, "3.1.0", _versions(VERSIONS)))
    assert a.parent == ROOT / "build" and a.name.startswith("cmake-")
    different = [
        key(env, FOUND, "3.1.0", _versions({**VERSIONS, "ninja": "1.11.1"})),
        key(env, FOUND, "3.1.0", _versions({**VERSIONS, "cmake": "cmake version 3.31.10"})),
        key(env, FOUND, "3.1.0", _versions({**VERSIONS, "c++": "g++ 13.1.0"})),
        key(env, FOUND, "2.13.6", _versions(VERSIONS)),
        key({"FUSEDOPT_CUDA": "auto"}, FOUND, "3.1.0", _versions(VERSIONS)),
        key({**env, "FUSEDOPT_WERROR": "1"}, FOUND, "3.1.0", _versions(VERSIONS)),
        key({**env, "FUSEDOPT_SANITIZE": "address"}, FOUND, "3.1.0", _versions(VERSIONS)),
        key({**env, "FUSEDOPT_CPU_ISAS": "generic"}, FOUND, "3.1.0", _versions(VERSIONS)),
        key({**env, "FUSEDOPT_CUDA_ARCHS": "90"}, FOUND, "3.1.0", _versions(VERSIONS)),
        key(env, FOUND, "3.1.0", _versions({**VERSIONS, "nvcc": "release 12.8"}),
            [{"nvcc": "/usr/local/cuda/bin/nvcc"}]),
        key({**env, "FUSEDOPT_CUDA_TOOLKITS": "/usr/local/cuda-12.8"}, FOUND, "3.1.0",
            _versions(VERSIONS)),
    ]
    dirs = {build_dir_for(k) for k in different}
    assert len(dirs) == len(different) and a not in dirs


def test_a_directory_made_with_another_key_is_emptied(setup_py, tmp_path):
    prepare = setup_py["prepare_build_dir"]
    d = tmp_path / "b"
    assert prepare(d, {"k": "1"}) is False
    (d / "CMakeCache.txt").write_text("CMAKE_MAKE_PROGRAM:FILEPATH=/gone/ninja\n")
    assert prepare(d, {"k": "1"}) is False and (d / "CMakeCache.txt").exists()
    assert prepare(d, {"k": "2"}) is True and not (d / "CMakeCache.txt").exists()
    assert json.loads((d / setup_py["KEY_FILE"]).read_text()) == {"k": "2"}
    # A cache without a key file (made by an older setup.py or by hand) is adopted; the
    # configure's retry covers one that no longer works.
    (d / setup_py["KEY_FILE"]).unlink()
    (d / "CMakeCache.txt").write_text("x")
    assert prepare(d, {"k": "3"}) is False and (d / "CMakeCache.txt").exists()
    assert json.loads((d / setup_py["KEY_FILE"]).read_text()) == {"k": "3"}


needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("cmake", "ninja", "c++")),
    reason="needs cmake, ninja and a C++ compiler")


def _command(setup_py, tmp_path, names=("fusedopt._C", "fusedopt._C_cuda"), editable=False):
    """setup.py's build_ext command for this checkout's sources, building into tmp_path/lib."""
    from setuptools import Distribution

    exts = [setup_py["CMakeExtension"](n, optional=n.endswith("_cuda")) for n in names]
    dist = Distribution({"name": "fusedopt", "package_dir": {"": "python"},
                         "ext_modules": exts})
    cmd = setup_py["CMakeBuild"](dist)
    cmd.build_lib = str(tmp_path / "lib")
    cmd.build_temp = str(tmp_path / "temp")
    cmd.editable_mode = editable
    cmd.ensure_finalized()
    return cmd


def _isolated_env(base: Path) -> Path:
    """A stand-in for pip's isolated build environment: its own ninja, first on the PATH."""
    bin_dir = base / "overlay" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(shutil.which("ninja"), bin_dir / "ninja")
    return bin_dir


def _cached_ninja(build_dir: Path) -> str:
    cache = (build_dir / "CMakeCache.txt").read_text()
    return re.search(r"^CMAKE_MAKE_PROGRAM:\w+=(.*)$", cache, re.M).group(1)


@needs_tools
def test_configure_survives_a_deleted_build_environment(setup_py, tmp_path, monkeypatch):
    """pip install . then pip wheel . at 707bfd3: 'CMake was unable to find a build program
    corresponding to "Ninja"' (the cache's ninja lived in the deleted isolated env).

    Runs the _C_cuda extension with FUSEDOPT_CUDA=off: a CMake configure and no compile."""
    monkeypatch.setenv("FUSEDOPT_CUDA", "off")
    monkeypatch.setenv("FUSEDOPT_BUILD_DIR", str(tmp_path / "cmake"))
    path = os.environ["PATH"]
    for env in ("env-a", "env-b"):
        ninja_dir = _isolated_env(tmp_path / env)
        monkeypatch.setenv("PATH", f"{ninja_dir}{os.pathsep}{path}")
        cmd = _command(setup_py, tmp_path, names=("fusedopt._C_cuda",))
        cmd.build_extension(cmd.extensions[0])
        assert _cached_ninja(tmp_path / "cmake") == str(ninja_dir / "ninja")
        # pybind11 from a stable place (its isolated-env path would change binding.cpp's
        # command line on every build: a recompile and a ccache miss).
        cache = (tmp_path / "cmake" / "CMakeCache.txt").read_text()
        assert re.search(rf"^pybind11_DIR:\w+={tmp_path / 'cmake' / 'pybind11'}/", cache, re.M)
        shutil.rmtree(tmp_path / env)  # pip deletes its build environment after the build


@needs_tools
def test_a_cache_made_elsewhere_is_reconfigured_cleanly(setup_py, tmp_path, monkeypatch):
    """A build dir without a key file whose cache CMake rejects (here: made for another source
    tree) is emptied and configured again, once."""
    build_dir = tmp_path / "cmake"
    build_dir.mkdir()
    (build_dir / "CMakeCache.txt").write_text(
        "CMAKE_HOME_DIRECTORY:INTERNAL=/elsewhere/fusedopt\n"
        "CMAKE_CACHEFILE_DIR:INTERNAL=/elsewhere/fusedopt/build\n")
    monkeypatch.setenv("FUSEDOPT_CUDA", "off")
    monkeypatch.setenv("FUSEDOPT_BUILD_DIR", str(build_dir))
    cmd = _command(setup_py, tmp_path, names=("fusedopt._C_cuda",))
    cmd.build_extension(cmd.extensions[0])
    assert f"CMAKE_HOME_DIRECTORY:INTERNAL={ROOT}" in (build_dir / "CMakeCache.txt").read_text()


@needs_tools
@pytest.mark.parametrize("editable", [False, True])
def test_cpu_only_build_drops_an_old_cuda_module(setup_py, tmp_path, monkeypatch, editable):
    """A FUSEDOPT_CUDA=off rebuild must not leave (and so pack, or import from the source tree
    of an editable install) the CUDA modules of an earlier build (_C_cuda<major>, or the
    single _C_cuda of older versions); its summary says why."""
    monkeypatch.setenv("FUSEDOPT_CUDA", "off")
    monkeypatch.setenv("FUSEDOPT_BUILD_DIR", str(tmp_path / "cmake"))
    source = tmp_path / "src"
    monkeypatch.setitem(setup_py["CMakeBuild"].run.__globals__, "SOURCE", source)
    cmd = _command(setup_py, tmp_path, names=("fusedopt._C_cuda",), editable=editable)
    olds = []
    for module in ("fusedopt._C_cuda", "fusedopt._C_cuda12", "fusedopt._C_cuda13"):
        name = cmd.get_ext_filename(module)
        olds += [tmp_path / "lib" / name, source / name]
    for old in olds:
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_bytes(b"an earlier build's module")
    cmd.run()
    for in_lib, in_source in zip(olds[::2], olds[1::2]):
        assert not in_lib.exists()
        # the source tree is only touched by editable builds
        assert in_source.exists() != editable
    summary = json.loads((tmp_path / "lib" / "fusedopt" / setup_py["SUMMARY"]).read_text())
    assert [s["stage"] for s in summary["stages"]] == ["configure", "CUDA"]
    assert summary["stages"][1]["status"] == "skipped: off (FUSEDOPT_CUDA=off)"
    assert summary["cuda_modules"] == []
    assert (source / "fusedopt" / setup_py["SUMMARY"]).exists() == editable


def test_clean_build_empties_build_lib(setup_py, monkeypatch):
    """``build`` empties build/lib.* before building: nothing of an earlier build is packed."""
    from setuptools import Distribution

    lib = ROOT / "build" / f"lib.test-clean-{os.getpid()}"
    (lib / "fusedopt").mkdir(parents=True, exist_ok=True)
    (lib / "fusedopt" / "removed_module.py").write_text("")
    seen = []
    parent = setup_py["CleanBuild"].__mro__[1]
    monkeypatch.setattr(parent, "run", lambda self: seen.append(lib.exists()))
    try:
        cmd = setup_py["CleanBuild"](Distribution({"name": "fusedopt"}))
        cmd.build_lib = str(lib)
        cmd.ensure_finalized()
        cmd.run()
        assert seen == [False]
    finally:
        shutil.rmtree(lib, ignore_errors=True)


def test_python_executable_in_key(setup_py):
    key = setup_py["build_key"]({}, FOUND, "3.1.0", _versions(VERSIONS))
    assert key["python"] == sys.executable
