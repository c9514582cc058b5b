"""Thin build driver: the Python packages, plus the native core ``fusedopt._C`` (and, when nvcc
is found, the CUDA kernels ``fusedopt._C_cuda``) built by CMakeLists.txt with ninja
(docs/architecture.md#build).

Build dependencies are pip packages only (pyproject.toml: pybind11, cmake, ninja; not torch),
so ``pip install .`` works with build isolation. Environment knobs, all optional:

* ``FUSEDOPT_CUDA=auto|on|off`` (default auto: ``fusedopt._C_cuda`` when nvcc is found)
* ``FUSEDOPT_CUDA_ARCHS``: CUDA architectures (default ``80;90``: sm_80/sm_90 cubins + PTX)
* ``FUSEDOPT_WERROR=1``: warnings are errors (CI)
* ``FUSEDOPT_SANITIZE`` (e.g. ``address,undefined``), ``FUSEDOPT_CPU_ISAS`` (e.g. ``generic``):
  passed to CMake as the cache options of the same name
* ``FUSEDOPT_BUILD_DIR``: CMake build directory (default: the keyed one, Note [build dir])
* ``FUSEDOPT_CCACHE=0``: do not compile through ccache even when it is on the PATH
* ``CMAKE_BUILD_PARALLEL_LEVEL``: compile jobs (default 2)

Note [build dir]: the CMake build directory is kept between builds so that a rebuild is
incremental, and is named ``build/cmake-<python tag>-<key>``, the key a hash of everything a
CMake cache remembers that can change under it: the interpreter, the cmake, ninja, pybind11 and
compiler versions, nvcc, and the options above (:func:`build_key`; the directory's
``fusedopt-build-key.json`` spells it out). Tool *paths* are left out of the key on purpose:
pip's build isolation puts cmake and ninja in a fresh temporary environment every time, so
keying by path would start from scratch on every ``pip install .``. Instead each configure
passes the current tools explicitly (``CMAKE_MAKE_PROGRAM``, the launcher) and configures with
a copy of pybind11 inside the build directory (:func:`stable_pybind11`), so a cache never
points at a deleted environment; and a configure that still fails in a reused
directory (a cache made some other way) is retried once in a wiped one.

Wheels hold exactly what this build produced: ``build/lib.*`` is emptied before every build
(a module no longer built, e.g. ``_C_cuda`` after ``FUSEDOPT_CUDA=off``, would otherwise be
packed again), and an optional module that is not built is removed from the source tree of an
editable install too.

Progress: one line per stage (configure, CPU core, CUDA) with its time, shown by
``pip install -v``; the same summary is written next to the modules as ``_build_summary.json``
and printed by ``python -m fusedopt.env``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "python"  # where an editable (or --inplace) build puts the modules
SUMMARY = "_build_summary.json"
KEY_FILE = "fusedopt-build-key.json"
#: Environment options forwarded to CMake (and part of the build key).
OPTIONS = ("FUSEDOPT_CUDA", "FUSEDOPT_CUDA_ARCHS", "FUSEDOPT_WERROR", "FUSEDOPT_SANITIZE",
           "FUSEDOPT_CPU_ISAS")


def tool_version(cmd: list[str]) -> str:
    """``cmd``'s output (``tool --version``), stripped; '' when it cannot run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(line.strip() for line in out.splitlines() if line.strip())


def find_nvcc(env: dict[str, str]) -> str | None:
    """The nvcc CMakeLists.txt finds: $CUDA_HOME/bin first, then the PATH."""
    home = env.get("CUDA_HOME")
    if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc", path=env.get("PATH"))


def tools(env: dict[str, str]) -> dict[str, str | None]:
    """Paths of the build tools this build runs (None: not found)."""
    ccache = None
    if env.get("FUSEDOPT_CCACHE", "1").lower() not in ("0", "off", "no", "false"):
        ccache = shutil.which("ccache", path=env.get("PATH"))
    return {
        "cmake": shutil.which("cmake", path=env.get("PATH")),
        "ninja": shutil.which("ninja", path=env.get("PATH")),
        "cxx": shutil.which(env.get("CXX") or "c++", path=env.get("PATH")),
        "nvcc": None if env.get("FUSEDOPT_CUDA", "auto") == "off" else find_nvcc(env),
        "ccache": ccache,
    }


def build_key(env: dict[str, str], found: dict[str, str | None], pybind11_version: str,
              version_of=tool_version) -> dict[str, str]:
    """What names the build directory (Note [build dir]): versions and options, not the
    temporary paths of an isolated build environment. ``version_of(cmd)`` runs a tool."""
    key = {
        "python": sys.executable,
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "cmake": version_of([found["cmake"], "--version"]) if found["cmake"] else "",
        "ninja": version_of([found["ninja"], "--version"]) if found["ninja"] else "",
        "pybind11": pybind11_version,
        # The compiler's resolved path and version: CMake caches both (CMAKE_CXX_COMPILER).
        "cxx": (os.path.realpath(found["cxx"]) + " " + version_of([found["cxx"], "--version"])
                if found["cxx"] else ""),
        "cudacxx": env.get("CUDACXX", ""),
        "nvcc": (os.path.realpath(found["nvcc"]) + " " + version_of([found["nvcc"], "--version"])
                 if found["nvcc"] else ""),
    }
    key.update({name: env.get(name, "") for name in OPTIONS})
    key["FUSEDOPT_CUDA"] = key["FUSEDOPT_CUDA"] or "auto"  # unset is auto
    return key


def build_dir_for(key: dict[str, str], root: Path = ROOT) -> Path:
    """``build/cmake-<python tag>-<10 hex digits of the key's hash>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    tag = key["soabi"] or f"py{sys.version_info.major}{sys.version_info.minor}"
    return root / "build" / f"cmake-{tag}-{digest}"


def prepare_build_dir(build_dir: Path, key: dict[str, str]) -> bool:
    """Creates ``build_dir``, or checks that the key it was made with is ``key``: a directory
    whose key file names another key (a FUSEDOPT_BUILD_DIR reused with other tools or options)
    is emptied. One without a key file (made by hand or by an older setup.py) is adopted: the
    configure passes every tool and option explicitly, and one that still fails is retried in
    an emptied directory. Returns whether it was emptied."""
    stamp = build_dir / KEY_FILE
    wiped = False
    if stamp.exists():
        try:
            same = json.loads(stamp.read_text()) == key
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(build_dir)
            wiped = True
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    return wiped


def stable_pybind11(build_dir: Path) -> Path:
    """pybind11's headers and CMake files, copied into the build directory; returns the CMake
    dir to configure with. Under build isolation pybind11 lives in a fresh temporary path every
    time: included from there, binding.cpp's command line would change on every ``pip``
    build (ninja recompiles it, and ccache misses, since the path is outside CCACHE_BASEDIR)."""
    import pybind11

    dst = build_dir / "pybind11"
    stamp = dst / "VERSION"
    if not stamp.exists() or stamp.read_text() != pybind11.__version__:
        src = Path(pybind11.get_include()).parent
        shutil.rmtree(dst, ignore_errors=True)
        for sub in ("include", "share"):
            shutil.copytree(src / sub, dst / sub)
        stamp.write_text(pybind11.__version__)
    return dst / "share" / "cmake" / "pybind11"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class CMakeExtension(Extension):
    """An extension whose sources CMakeLists.txt knows (setuptools only places the result).
    ``optional``: CMake may not define it (fusedopt._C_cuda without nvcc); then nothing is built
    and setuptools copies nothing."""

    def __init__(self, name: str, optional: bool = False) -> None:
        super().__init__(name, sources=[], optional=optional)


class CleanBuild(build):
    """``build`` that empties ``build/lib.*`` first, so a wheel packs only this build's files."""

    def run(self) -> None:
        lib = Path(self.build_lib).resolve()
        if lib.is_dir() and (ROOT / "build") in lib.parents:
            shutil.rmtree(lib)
        super().run()


class CMakeBuild(build_ext):
    _configured: Path | None = None
    _stages: list[dict] | None = None
    _to_source = False

    def _say(self, text: str) -> None:
        print(f"fusedopt build: {text}", flush=True)

    def _configure(self) -> Path:
        """Runs CMake once per build (both modules share one build directory)."""
        if self._configured is not None:
            return self._configured
        import pybind11  # a build dependency (pyproject.toml)

        env = dict(os.environ)
        found = tools(env)
        key = build_key(env, found, pybind11.__version__)
        build_dir = (Path(env["FUSEDOPT_BUILD_DIR"]).resolve() if env.get("FUSEDOPT_BUILD_DIR")
                     else build_dir_for(key))
        wiped = prepare_build_dir(build_dir, key)
        reused = (build_dir / "CMakeCache.txt").exists()
        # Editable installs (and --inplace) get the modules straight into the source tree, so
        # that `cmake --build <build dir> --target _C` alone updates what `import fusedopt`
        # loads; other builds into build_lib, which the wheel packs.
        out_dir = (SOURCE / "fusedopt" if self._to_source
                   else Path(self.build_lib).resolve() / "fusedopt")
        launcher = found["ccache"] or ""
        configure = [
            found["cmake"] or "cmake", str(ROOT), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={stable_pybind11(build_dir)}",
            f"-DFUSEDOPT_CUDA={env.get('FUSEDOPT_CUDA', 'auto')}",
            f"-DFUSEDOPT_WERROR={'ON' if env.get('FUSEDOPT_WERROR') == '1' else 'OFF'}",
            f"-DCMAKE_CXX_COMPILER_LAUNCHER={launcher}",
            f"-DCMAKE_CUDA_COMPILER_LAUNCHER={launcher}",
        ]
        if found["ninja"]:  # the current one: a cached path may be a deleted isolated env's
            configure.append(f"-DCMAKE_MAKE_PROGRAM:FILEPATH={found['ninja']}")
        for name in ("FUSEDOPT_CUDA_ARCHS", "FUSEDOPT_SANITIZE", "FUSEDOPT_CPU_ISAS"):
            if name in env:
                configure.append(f"-D{name}={env[name]}")
        self._stages = []
        self._started = time.time()
        self._load_start = _load_average()
        t0 = time.monotonic()
        state = "reused" if reused else "emptied: made with another key" if wiped else "new"
        self._say(f"configure in {build_dir} ({state}; ccache {'on' if launcher else 'off'})")
        if subprocess.run(configure, cwd=build_dir).returncode != 0:
            if not reused:
                raise subprocess.CalledProcessError(1, configure)
            self._say("configure failed in a reused build directory: wiping it and retrying")
            shutil.rmtree(build_dir)
            prepare_build_dir(build_dir, key)
            stable_pybind11(build_dir)
            subprocess.run(configure, cwd=build_dir, check=True)
        self._stage("configure", time.monotonic() - t0, "done")
        self._configured = build_dir
        self._key, self._found = key, found
        return build_dir

    def _stage(self, name: str, seconds: float, status: str) -> None:
        assert self._stages is not None
        self._stages.append({"stage": name, "seconds": round(seconds, 1), "status": status})
        self._say(f"{name}: {status} in {seconds:.1f} s")

    def build_extension(self, ext: Extension) -> None:
        build_dir = self._configure()
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        target = ext.name.rsplit(".", 1)[-1]
        stage = "CUDA (fusedopt._C_cuda)" if target == "_C_cuda" else "CPU core (fusedopt._C)"
        cache = (build_dir / "CMakeCache.txt").read_text()
        if target == "_C_cuda" and "FUSEDOPT_CUDA_BUILT:INTERNAL=ON" not in cache:
            # No nvcc (or FUSEDOPT_CUDA=off): the CPU-only install. Whatever an earlier build
            # left must go too, or it would be packed / imported as if built now.
            stale = [Path(self.get_ext_fullpath(ext.name))]
            if self._to_source:  # editable: CMake writes into the source tree
                stale.append(SOURCE / self.get_ext_filename(ext.name))
            for old in stale:
                old.unlink(missing_ok=True)
            reason = next((line.split("=", 1)[1] for line in cache.splitlines()
                           if line.startswith("FUSEDOPT_CUDA_STATUS_TEXT:")), "not built")
            self._stage(stage, 0.0, f"skipped: {reason}")
            return
        self._say(f"{stage}: building ({jobs} jobs)")
        t0 = time.monotonic()
        # CCACHE_BASEDIR: paths under the checkout become relative in what ccache hashes, so
        # another clone (CI's, a helper's) reuses the objects this one compiled.
        env = {"CCACHE_BASEDIR": str(ROOT), **os.environ}
        subprocess.run([self._found["cmake"] or "cmake", "--build", ".", "--target", target,
                        "-j", jobs], cwd=build_dir, check=True, env=env)
        self._stage(stage, time.monotonic() - t0, "built")

    def copy_extensions_to_source(self) -> None:
        """Nothing to copy: an in-place build's modules are already in the source tree."""

    def run(self) -> None:
        # setuptools' run() builds with inplace off, then copies build_lib's modules into the
        # source tree when inplace was on (editable installs, --inplace); CMake writes them
        # there itself (_configure), so there is nothing to copy.
        self._to_source = bool(self.inplace)
        super().run()
        if self._stages is None:
            return
        summary = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._started)),
            "stages": self._stages,
            "total_seconds": round(time.time() - self._started, 1),
            "jobs": int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")),
            "cpus": os.cpu_count(),
            "load_average_start": self._load_start,
            "load_average_end": _load_average(),
            "build_dir": str(self._configured),
            "ccache": bool(self._found["ccache"]),
            "key": self._key,
        }
        text = json.dumps(summary, indent=2) + "\n"
        dests = {Path(self.build_lib) / "fusedopt" / SUMMARY}
        if self._to_source:
            dests.add(SOURCE / "fusedopt" / SUMMARY)
        for dest in dests:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
        self._say(f"done in {summary['total_seconds']:.1f} s: " + "; ".join(
            f"{s['stage']} {s['status']} {s['seconds']:.1f} s" for s in self._stages))


TRITON = ["fusedopt.triton_kernels"] if (ROOT / "triton_kernels").is_dir() else []

setup(
    package_dir={"": "python", "fusedopt.triton_kernels": "triton_kernels"},
    packages=find_packages("python") + TRITON,
    package_data={"fusedopt.bench": ["*.json"]},
    ext_modules=[CMakeExtension("fusedopt._C"),
                 CMakeExtension("fusedopt._C_cuda", optional=True)],
    cmdclass={"build": CleanBuild, "build_ext": CMakeBuild},
)
