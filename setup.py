"""Thin build driver: the Python packages, plus the native core ``fusedopt._C`` built by
CMakeLists.txt and, for each CUDA toolkit found, the CUDA kernels ``fusedopt._C_cuda<major>``
built by csrc/cuda/CMakeLists.txt, all with ninja (docs/architecture.md#build).

Build dependencies are pip packages only (pyproject.toml: pybind11, cmake, ninja; not torch),
so ``pip install .`` works with build isolation. Environment knobs, all optional:

* ``FUSEDOPT_CUDA=auto|on|off`` (default auto: the CUDA modules of the toolkits found; on: fail
  when none is)
* ``FUSEDOPT_CUDA_TOOLKITS``: the CUDA toolkits to build with, ``os.pathsep``-separated, each a
  toolkit folder (``/usr/local/cuda-12.8``) or an nvcc. Default: the nvcc of ``$CUDA_HOME`` or
  the PATH, plus the newest ``/usr/local/cuda-<major>.<minor>`` of every other CUDA major
  (:func:`toolkit_plan`; Note [CUDA modules] in python/fusedopt/_native_cuda.py)
* ``FUSEDOPT_CUDA_ARCHS``: CUDA architectures (default ``80;90``: sm_80/sm_90 cubins + PTX;
  ``release``: sm_80/86/89/90, + sm_100/sm_120 from CUDA 12.8, what a wheel ships)
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

Progress: one line per stage (configure, CPU core, CUDA 12, CUDA 13) with its time, shown by
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
           "FUSEDOPT_CPU_ISAS", "FUSEDOPT_CUDA_TOOLKITS")
#: The CUDA majors a module can be built for (csrc/cuda needs C++17 device code and sm_80).
CUDA_MAJORS = (12, 13)


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


def nvcc_release(version_text: str) -> tuple[int, int] | None:
    """(major, minor) from ``nvcc --version``'s "release 12.8," (None: not an nvcc)."""
    import re

    m = re.search(r"release (\d+)\.(\d+)", version_text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def toolkit_plan(env: dict[str, str], version_of=tool_version,
                 installed: str = "/usr/local/cuda-*") -> tuple[list[dict], str]:
    """The CUDA modules to build: ``[{"major", "version", "nvcc", "module"}]``, one per CUDA
    major (the first toolkit of a major wins), and a line saying what was found or why nothing.

    ``FUSEDOPT_CUDA_TOOLKITS`` names them (a toolkit folder or an nvcc each; one that has no
    nvcc is an error); otherwise the nvcc of $CUDA_HOME or the PATH, then the newest toolkit
    of each other major under ``installed`` (NVIDIA's installers put each version in
    /usr/local/cuda-X.Y, side by side). ``version_of(cmd)`` runs ``nvcc --version``."""
    import glob

    if env.get("FUSEDOPT_CUDA", "auto") == "off":
        return [], "off (FUSEDOPT_CUDA=off)"
    listed = [t for t in env.get("FUSEDOPT_CUDA_TOOLKITS", "").split(os.pathsep) if t]
    candidates: list[str] = []
    for entry in listed:
        nvcc = os.path.join(entry, "bin", "nvcc") if os.path.isdir(entry) else entry
        if not os.access(nvcc, os.X_OK):
            raise SystemExit(f"fusedopt build: FUSEDOPT_CUDA_TOOLKITS: no nvcc at {nvcc}")
        candidates.append(nvcc)
    if not listed:
        default = find_nvcc(env)
        candidates = [default] if default else []

        def minor_key(path: str) -> tuple[int, ...]:
            tail = path.split("cuda-")[-1].split("/")[0]
            return tuple(int(x) if x.isdigit() else -1 for x in tail.split("."))

        candidates += sorted(glob.glob(os.path.join(installed, "bin", "nvcc")), key=minor_key,
                             reverse=True)
    plan: list[dict] = []
    skipped: list[str] = []
    for nvcc in candidates:
        release = nvcc_release(version_of([nvcc, "--version"]))
        if release is None:
            skipped.append(f"{nvcc}: not an nvcc")
        elif release[0] not in CUDA_MAJORS:
            skipped.append(f"{nvcc}: CUDA {release[0]}.{release[1]} (supported: "
                           f"{', '.join(map(str, CUDA_MAJORS))})")
        elif all(t["major"] != release[0] for t in plan):
            plan.append({"major": release[0], "version": f"{release[0]}.{release[1]}",
                         "nvcc": nvcc, "module": f"_C_cuda{release[0]}"})
    if plan:
        text = ", ".join(f"fusedopt.{t['module']} (nvcc {t['version']}, {t['nvcc']})"
                         for t in plan)
    elif env.get("FUSEDOPT_CUDA") == "on":
        raise SystemExit("fusedopt build: FUSEDOPT_CUDA=on but no CUDA 12 or 13 nvcc was found "
                         "(set CUDA_HOME, PATH or FUSEDOPT_CUDA_TOOLKITS)"
                         + (f": {'; '.join(skipped)}" if skipped else ""))
    else:
        text = "nvcc not found (FUSEDOPT_CUDA=auto): CPU only"
    if skipped:
        text += f" (skipped {'; '.join(skipped)})"
    return plan, text


def tools(env: dict[str, str]) -> dict[str, str | None]:
    """Paths of the build tools this build runs (None: not found)."""
    ccache = None
    if env.get("FUSEDOPT_CCACHE", "1").lower() not in ("0", "off", "no", "false"):
        ccache = shutil.which("ccache", path=env.get("PATH"))
    return {
        "cmake": shutil.which("cmake", path=env.get("PATH")),
        "ninja": shutil.which("ninja", path=env.get("PATH")),
        "cxx": shutil.which(env.get("CXX") or "c++", path=env.get("PATH")),
        "ccache": ccache,
    }


def build_key(env: dict[str, str], found: dict[str, str | None], pybind11_version: str,
              version_of=tool_version, toolkits: list[dict] | None = None) -> dict[str, str]:
    """What names the build directory (Note [build dir]): versions and options, not the
    temporary paths of an isolated build environment. ``version_of(cmd)`` runs a tool;
    ``toolkits`` is :func:`toolkit_plan`'s list (each nvcc's path and full version)."""
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
        "nvcc": "; ".join(os.path.realpath(t["nvcc"]) + " " + version_of([t["nvcc"], "--version"])
                          for t in toolkits or []),
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

    def _out_dir(self) -> Path:
        """Editable installs (and --inplace) get the modules straight into the source tree, so
        that `cmake --build <build dir> --target _C` alone updates what `import fusedopt`
        loads; other builds into build_lib, which the wheel packs."""
        return (SOURCE / "fusedopt" if self._to_source
                else Path(self.build_lib).resolve() / "fusedopt")

    def _cmake(self, source: Path, build_dir: Path, options: list[str], key: dict[str, str],
               reused: bool) -> None:
        """Configures ``source`` in ``build_dir`` with the current tools (Note [build dir]); a
        configure that fails in a reused directory is retried once in an emptied one."""
        found = self._found
        launcher = found["ccache"] or ""
        configure = [
            found["cmake"] or "cmake", "-S", str(source), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={self._out_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={stable_pybind11(build_dir)}",
            f"-DFUSEDOPT_WERROR={'ON' if os.environ.get('FUSEDOPT_WERROR') == '1' else 'OFF'}",
            f"-DCMAKE_CXX_COMPILER_LAUNCHER={launcher}",
            f"-DCMAKE_CUDA_COMPILER_LAUNCHER={launcher}",
            *options,
        ]
        if found["ninja"]:  # the current one: a cached path may be a deleted isolated env's
            configure.append(f"-DCMAKE_MAKE_PROGRAM:FILEPATH={found['ninja']}")
        if subprocess.run(configure, cwd=build_dir).returncode != 0:
            if not reused:
                raise subprocess.CalledProcessError(1, configure)
            self._say("configure failed in a reused build directory: wiping it and retrying")
            shutil.rmtree(build_dir)
            prepare_build_dir(build_dir, key)
            stable_pybind11(build_dir)
            subprocess.run(configure, cwd=build_dir, check=True)

    def _configure(self) -> Path:
        """Runs CMake once per build for the CPU core; the CUDA modules configure their own
        build directories, inside this one (build_extension)."""
        if self._configured is not None:
            return self._configured
        import pybind11  # a build dependency (pyproject.toml)

        env = dict(os.environ)
        found = tools(env)
        self._toolkits, self._cuda_text = toolkit_plan(env)
        key = build_key(env, found, pybind11.__version__, toolkits=self._toolkits)
        build_dir = (Path(env["FUSEDOPT_BUILD_DIR"]).resolve() if env.get("FUSEDOPT_BUILD_DIR")
                     else build_dir_for(key))
        wiped = prepare_build_dir(build_dir, key)
        reused = (build_dir / "CMakeCache.txt").exists()
        self._found, self._key = found, key
        options = [f"-DFUSEDOPT_CUDA_STATUS={self._cuda_text}"]
        for name in ("FUSEDOPT_SANITIZE", "FUSEDOPT_CPU_ISAS"):
            if name in env:
                options.append(f"-D{name}={env[name]}")
        self._stages = []
        self._started = time.time()
        self._load_start = _load_average()
        t0 = time.monotonic()
        state = "reused" if reused else "emptied: made with another key" if wiped else "new"
        self._say(f"configure in {build_dir} ({state}; ccache "
                  f"{'on' if found['ccache'] else 'off'}); CUDA: {self._cuda_text}")
        self._cmake(ROOT, build_dir, options, key, reused)
        self._stage("configure", time.monotonic() - t0, "done")
        self._configured = build_dir
        return build_dir

    def _stage(self, name: str, seconds: float, status: str) -> None:
        assert self._stages is not None
        self._stages.append({"stage": name, "seconds": round(seconds, 1), "status": status})
        self._say(f"{name}: {status} in {seconds:.1f} s")

    def _compile(self, build_dir: Path, target: str, stage: str) -> None:
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        self._say(f"{stage}: building ({jobs} jobs)")
        t0 = time.monotonic()
        # CCACHE_BASEDIR: paths under the checkout become relative in what ccache hashes, so
        # another clone (CI's, a helper's) reuses the objects this one compiled.
        env = {"CCACHE_BASEDIR": str(ROOT), **os.environ}
        subprocess.run([self._found["cmake"] or "cmake", "--build", ".", "--target", target,
                        "-j", jobs], cwd=build_dir, check=True, env=env)
        self._stage(stage, time.monotonic() - t0, "built")

    def _remove_cuda_modules(self, keep: set[str]) -> None:
        """Removes every ``_C_cuda*`` module not built now (an earlier build's, another
        toolkit's, or one of the single ``_C_cuda`` of older setup.py versions): it would be
        packed, or imported from an editable install's source tree, as if built now."""
        dirs = {Path(self.build_lib).resolve() / "fusedopt"}
        if self._to_source:  # editable: CMake writes into the source tree
            dirs.add(SOURCE / "fusedopt")
        suffix = Path(self.get_ext_filename("fusedopt._C")).name[len("_C"):]
        for d in dirs:
            for old in d.glob(f"_C_cuda*{suffix}"):
                if old.name[:-len(suffix)] not in keep:
                    old.unlink()

    def _build_cuda(self, build_dir: Path) -> None:
        """One module per toolkit of :func:`toolkit_plan`, each csrc/cuda configured in its own
        directory (a CMake project has one CUDA compiler)."""
        self._cuda_built = []
        self._remove_cuda_modules({t["module"] for t in self._toolkits})
        if not self._toolkits:
            self._stage("CUDA", 0.0, f"skipped: {self._cuda_text}")
            return
        for t in self._toolkits:
            sub = build_dir / f"cuda{t['major']}"
            sub_key = {**self._key, "toolkit": json.dumps(t, sort_keys=True)}
            wiped = prepare_build_dir(sub, sub_key)
            reused = (sub / "CMakeCache.txt").exists() and not wiped
            options = [f"-DCMAKE_CUDA_COMPILER={t['nvcc']}",
                       f"-DFUSEDOPT_CUDA_MODULE={t['module']}"]
            if "FUSEDOPT_CUDA_ARCHS" in os.environ:
                options.append(f"-DFUSEDOPT_CUDA_ARCHS={os.environ['FUSEDOPT_CUDA_ARCHS']}")
            stage = f"CUDA {t['major']} (fusedopt.{t['module']}, nvcc {t['version']})"
            t0 = time.monotonic()
            self._cmake(ROOT / "csrc" / "cuda", sub, options, sub_key, reused)
            configure_s = time.monotonic() - t0
            self._compile(sub, t["module"], stage)
            self._stages[-1]["seconds"] = round(self._stages[-1]["seconds"] + configure_s, 1)
            built = next(self._out_dir().glob(f"{t['module']}.*"), None)
            self._cuda_built.append({**t, "file": built.name if built else None,
                                     "bytes": built.stat().st_size if built else None})

    def build_extension(self, ext: Extension) -> None:
        build_dir = self._configure()
        target = ext.name.rsplit(".", 1)[-1]
        if target == "_C_cuda":  # the placeholder of every _C_cuda<major> (toolkit_plan)
            self._build_cuda(build_dir)
        else:
            self._compile(build_dir, target, "CPU core (fusedopt._C)")

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
            "cuda": self._cuda_text,
            "cuda_modules": getattr(self, "_cuda_built", []),
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
