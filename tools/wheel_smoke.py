"""Smoke test of an installed fusedopt wheel, run by .ci/run in a fresh venv whose PATH holds no
compiler: the wheel must work with nothing to build.

Checks: no C/C++/CUDA compiler is reachable; fusedopt is imported from the wheel (not a
checkout); one AdamW step on the CPU backend matches torch.optim.AdamW; one OpenMP runtime is
mapped (libgomp is not grafted into the wheel: _C binds to torch's); ``python -m fusedopt.env``
runs; each CUDA module in the wheel imports without a GPU and says so (runtime_status), and the
loader's ImportError names the reason no module is used here (no CUDA driver, or none built).
Exits non-zero with a message on the first failure; prints one line per check.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"wheel smoke test FAILED: {what}")
    print(f"ok: {what}", flush=True)


def main() -> int:
    compilers = {c: shutil.which(c) for c in ("gcc", "g++", "cc", "c++", "clang", "nvcc")}
    check(not any(compilers.values()), f"no compiler on the PATH ({compilers})")

    import torch

    import fusedopt
    from fusedopt import _native_cuda

    check(fusedopt.__file__.startswith(sys.prefix), f"fusedopt from the wheel: {fusedopt.__file__}")
    check(not os.path.exists(os.path.join(os.path.dirname(fusedopt.__file__), "..", "setup.py")),
          "not a source checkout")

    torch.manual_seed(0)
    p = torch.randn(1000, dtype=torch.float32)
    g = torch.randn(1000, dtype=torch.float32)
    ours, ref = p.clone().requires_grad_(), p.clone().requires_grad_()
    ours.grad, ref.grad = g.clone(), g.clone()
    opt = fusedopt.AdamW([ours], lr=1e-2, weight_decay=0.1, backend="cpu")
    torch_opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.1)
    opt.step()
    torch_opt.step()
    err = (ours.detach() - ref.detach()).abs().max().item()
    check(err <= 1e-6, f"one CPU AdamW step matches torch.optim.AdamW (max error {err:.1e})")

    with open("/proc/self/maps") as f:
        omp = {line.split()[-1] for line in f
               if "libgomp" in line or "libomp" in line or "libiomp" in line}
    check(len(omp) == 1, f"one OpenMP runtime mapped: {sorted(omp)}")

    env = subprocess.run([sys.executable, "-m", "fusedopt.env"], capture_output=True, text=True)
    check(env.returncode == 0 and "CUDA modules" in env.stdout,
          "python -m fusedopt.env runs:\n" + env.stdout + env.stderr)

    modules = _native_cuda.built_modules()
    driver, why_no_driver = _native_cuda.driver_version()
    for major, name in modules:
        module = importlib.import_module(f"fusedopt.{name}")
        status = module.runtime_status()
        check(status["runtime_version"] // 1000 == major,
              f"{name} imports; its CUDA runtime is {status['runtime_version']}")
        if driver is None:
            check(status["device_count"] == 0 and bool(status["error"]),
                  f"{name} without a driver says: {status['error']}")
    try:
        _native_cuda.native()
        loaded = True
    except ImportError as exc:
        loaded, message = False, str(exc)
    if driver is None or not modules:
        check(not loaded, "the loader uses no CUDA module here: "
              + (message if not loaded else "(it loaded one)"))
        expected = "no CUDA module was built" if not modules else "no CUDA driver"
        check(expected in message, f"and says why ({expected!r})")
    print(f"wheel smoke test passed ({len(modules)} CUDA module(s): "
          f"{', '.join(n for _, n in modules) or 'none'}; driver: "
          f"{driver if driver is not None else why_no_driver})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
