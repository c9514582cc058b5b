"""``import fusedopt`` stays cheap: nothing heavy is imported until it is used.

torch.distributed.tensor alone costs ~2 s (sympy, DTensor's op registry); Triton, the native
extensions, matplotlib and scikit-learn load only with the backend, plot or experiment that
needs them. A fresh interpreter is the only place to see what an import pulled in, so each
check runs in a subprocess; it asserts module names, not seconds (a timed test would fail on a
busy machine and pass a regression on a fast one).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

#: imported by ``import fusedopt`` only when used (prefixes: a submodule counts as its package)
LAZY = ("torch.distributed.tensor", "torch.distributed.fsdp", "torch.distributed.checkpoint",
        "triton", "fusedopt.triton_kernels", "fusedopt._C", "fusedopt._C_cuda12",
        "fusedopt._C_cuda13",
        "fusedopt.bench", "fusedopt.papers", "matplotlib", "sklearn", "sympy", "deepspeed")


def _loaded_after(code: str, setup: str = "") -> list[str]:
    """Module names that ``code`` adds to a fresh interpreter's sys.modules beyond what torch
    and ``setup`` import."""
    probe = ("import sys, json, torch\n"
             f"{setup}\n"
             "before = set(sys.modules)\n"
             f"{code}\n"
             "print(json.dumps(sorted(set(sys.modules) - before)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(mods: list[str]) -> list[str]:
    return [m for m in mods if any(m == h or m.startswith(h + ".") for h in LAZY)]


def test_import_fusedopt_loads_nothing_heavy():
    mods = _loaded_after("import fusedopt")
    assert "fusedopt.optim._distributed" in mods  # the probe saw fusedopt's own imports
    assert _heavy(mods) == []


def test_an_optimizer_step_loads_nothing_heavy_beyond_torch_optim():
    # torch.optim.Optimizer.add_param_group imports torch._dynamo (and sympy with it) on its
    # first call: a torch.optim.AdamW step first, so that only fusedopt's own imports count.
    # The reference backend is pure torch; the step calls is_dtensor / local on every param.
    mods = _loaded_after("import fusedopt\n"
                         "p = torch.nn.Parameter(torch.ones(4))\n"
                         "opt = fusedopt.AdamW([p], backend='reference', max_grad_norm=1.0)\n"
                         "p.grad = torch.ones(4)\n"
                         "opt.step()\n",
                         setup="q = torch.nn.Parameter(torch.ones(4))\n"
                               "q.grad = torch.ones(4)\n"
                               "torch.optim.AdamW([q]).step()\n")
    assert "fusedopt.optim.adamw" in mods
    # the first step loads fusedopt._C (under 1 ms): the step signature of every backend reads
    # tensors through it (Note [step signature], csrc/step_signature.cpp)
    assert _heavy([m for m in mods if m != "fusedopt._C"]) == []


def test_dtensor_recognised_once_its_module_is_imported():
    """is_dtensor without importing DTensor: False for plain tensors always, True for a DTensor
    created after the import of fusedopt (the check looks the class up when it appears)."""
    code = ("import fusedopt\n"
            "from fusedopt.optim import _distributed as D\n"
            "t = torch.ones(4)\n"
            "assert not D.is_dtensor(t) and D.local(t) is t\n"
            "import torch.distributed as dist\n"
            "if dist.is_available():\n"
            "    from torch.distributed.tensor import DTensor, Replicate\n"
            "    from torch.distributed.device_mesh import DeviceMesh\n"
            "    import os\n"
            "    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=os.environ['PORT'])\n"
            "    dist.init_process_group('gloo', rank=0, world_size=1)\n"
            "    mesh = DeviceMesh('cpu', [0])\n"
            "    d = DTensor.from_local(torch.ones(4), mesh, [Replicate()])\n"
            "    assert D.is_dtensor(d) and D.local(d) is d._local_tensor\n"
            "    assert not D.is_dtensor(t)\n"
            "    dist.destroy_process_group()\n"
            "print('ok')\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port)}
    out = subprocess.run([sys.executable, "-c", "import torch\n" + code], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_submodules_load_nothing_heavy():
    names = ("fusedopt.monitor", "fusedopt.amp", "fusedopt.schedules", "fusedopt.papers")
    mods = _loaded_after("import " + ", ".join(names))
    assert set(names) <= set(mods)
    assert _heavy([m for m in mods if m != "fusedopt.papers"]) == []
