"""``python -m fusedopt.env``: what this fusedopt install can run, for bug reports.

Prints versions, the native build (compiler, flags, OpenMP, CUDA switch, and how long each
stage of the build took), the CPU and the ISA its kernels run with, the OpenMP runtime actually
loaded, the GPU, and for each device type which backend ``backend="auto"`` picks and why each
other one would or would not be used.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from . import _native, backends


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loaded_openmp() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (Note [threads], parallel.h)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _native_lines() -> list[str]:
    if _native.LOAD_ERROR is not None:
        return [f"  not available: {_native.LOAD_ERROR}"]
    C = _native.native()
    info = C.build_info()
    return [
        f"  compiler: g++ {info['compiler']}, OpenMP {info.get('openmp', 'off')}",
        f"  flags: {info['flags']}",
        f"  ISA builds: generic (baseline), avx2 ({info['isa_flags']['avx2']}), "
        f"avx512 ({info['isa_flags']['avx512']})",
        f"  CPU ISA in use: {C.isa()} (this CPU supports: {', '.join(C.supported_isas())}; "
        "override with FUSEDOPT_CPU_ISA)",
        f"  chunk: {info['chunk_size']} elements, {info['lanes']} reduction lanes",
        f"  CUDA: {info['cuda']}",
    ]


def _build_lines() -> list[str]:
    """setup.py's summary of the build that made this install's modules (_build_summary.json,
    written next to them): a line per stage with its time, and the load it ran under."""
    path = Path(__file__).with_name("_build_summary.json")
    try:
        s = json.loads(path.read_text())
    except (OSError, ValueError):
        return ["  no build summary (modules built by hand or by an older setup.py)"]
    lines = [f"  {s['date']}: {s['total_seconds']:.0f} s with {s['jobs']} jobs on {s['cpus']} "
             f"CPUs (load average {s.get('load_average_start')} at start, "
             f"{s.get('load_average_end')} at end), ccache {'on' if s.get('ccache') else 'off'}"]
    lines += [f"    {st['stage']}: {st['status']}, {st['seconds']:.1f} s" for st in s["stages"]]
    lines.append(f"  build dir: {s['build_dir']}")
    return lines


def _cuda_module_lines() -> list[str]:
    """The CUDA modules of this install, what driver each needs, the driver's version and
    which module the loader picks (Note [CUDA modules] in fusedopt._native_cuda); nothing is
    loaded but libcuda.so.1, for its version."""
    from . import _native_cuda as nc

    modules = nc.built_modules()
    if not modules:
        return ["  none built (nvcc was not found when fusedopt was installed, or "
                "FUSEDOPT_CUDA=off)"]
    built = {}
    try:
        summary = json.loads(Path(__file__).with_name("_build_summary.json").read_text())
        built = {m["module"]: m for m in summary.get("cuda_modules", [])}
    except (OSError, ValueError):
        pass
    lines = []
    for major, name in modules:
        facts = built.get(name, {})
        nvcc = f"nvcc {facts['version']}, " if "version" in facts else ""
        size = f", {facts['bytes'] / 2**20:.1f} MiB" if facts.get("bytes") else ""
        lines.append(f"  {name}: CUDA {major} ({nvcc}needs {nc.requirement(major)}{size})")
    driver, error = nc.driver_version()
    lines.append(f"  driver: CUDA {nc.cuda_version_text(driver)}" if driver is not None
                 else f"  driver: none: {error}")
    name, why = nc.selection()
    lines.append(f"  picked: {name} ({why})" if name else f"  picked: none: {why}")
    return lines


def _backend_lines(device: str) -> list[str]:
    lines = []
    try:
        chosen = backends.resolve("auto", torch.device(device)).NAME
    except (RuntimeError, ValueError) as exc:
        chosen = f"none ({exc})"
    lines.append(f"  {device}: auto -> {chosen}")
    for name in backends.BACKENDS:
        ok, reason = backends.availability(name)
        if not ok:
            verdict = f"not available: {reason}"
        elif not backends.load(name).supports(torch.device(device)):
            verdict = f"available ({reason}) but cannot run {device} tensors"
        else:
            verdict = f"usable ({reason})"
        lines.append(f"    {name:<9} {verdict}")
    return lines


def report() -> str:
    """The whole report as text."""
    import fusedopt

    lines = [
        f"fusedopt {fusedopt.__version__} ({fusedopt.__file__})",
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"triton {_version('triton')}, numpy {_version('numpy')}, "
        f"deepspeed {_version('deepspeed')}",
        f"platform: {platform.platform()}",
        f"CPU: {_cpu_model()}, torch threads {torch.get_num_threads()}",
        f"OpenMP runtimes loaded: {', '.join(_loaded_openmp()) or 'none'}",
        "native core (fusedopt._C):",
        *_native_lines(),
        "build (setup.py):",
        *_build_lines(),
        "CUDA modules (fusedopt._C_cuda<major>, picked by the driver's CUDA version):",
        *_cuda_module_lines(),
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name} (sm_{props.major}{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    else:
        lines.append(f"GPU: none visible to torch (torch CUDA build: {torch.version.cuda})")
    lines.append("backends (auto order: cuda, triton, cpu, reference):")
    for device in ("cpu",) + (("cuda",) if torch.cuda.is_available() else ()):
        lines += _backend_lines(device)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m fusedopt.env", description=__doc__.split("\n\n")[1]
                            .replace("\n", " ")).parse_args(argv)
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
