"""What machine and software a run measured: CPU, ISA, threads, GPU, versions, load, commit."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from .. import __version__, backends

#: Packages whose versions a result depends on (absent ones are recorded as None).
PACKAGES = ("torch", "numpy", "triton", "deepspeed", "apex", "transformer_engine")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's answer)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector ISA extensions the CPU reports that matter to the kernels."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "amx_bf16")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def gpu_name(device: torch.device) -> str | None:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def _slug(text: str) -> str:
    text = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|@.*$|\bProcessor\b", " ", text)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_name(device: torch.device) -> str:
    """A short name for the results folder: ``cpu-<model>-<cores>c`` or ``gpu-<model>``."""
    if device.type == "cuda":
        return "gpu-" + _slug(torch.cuda.get_device_name(device))
    return f"cpu-{_slug(cpu_model())}-{os.cpu_count()}c"


def _version(package: str) -> str | None:
    dist = {"transformer_engine": "transformer-engine"}.get(package, package)
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the fusedopt checkout this package runs from (+"-dirty"), if it is one."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "python" / "fusedopt").is_dir():  # installed, not run from a checkout
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "python", "csrc", "triton_kernels"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def collect(device: torch.device) -> dict:
    """Everything a result row's reader needs to know about where and when it was measured."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_name(device),
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_isa": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": gpu_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": sys.version.split()[0],
        "fusedopt": __version__,
        "commit": git_commit(),
        "backends": backends.available_backends(device),
        "versions": {p: _version(p) for p in PACKAGES},
        "load_avg_start": load_average(),
    }
    return info
