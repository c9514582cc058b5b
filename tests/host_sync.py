"""Count host reads of tensor values on the CPU: each would be a device sync on CUDA.

A CPU-only machine cannot observe a CUDA sync, so the tests count what causes one:

* at the dispatcher: ``_local_scalar_dense`` (``.item()``, ``float()``, ``int()``, ``bool()``,
  ``if tensor:``), ops whose output size depends on the data (``nonzero``, ``masked_select``,
  ``unique*``, indexing with a boolean mask);
* in Python: ``Tensor.tolist``, ``Tensor.numpy`` and ``Tensor.cpu``, which never reach the
  dispatcher for a CPU tensor.

On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` is the stronger check.
"""
from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_DATA_DEPENDENT = ("_local_scalar_dense", "nonzero", "masked_select", "unique",
                   "_unique", "_unique2", "unique_consecutive")
_PY_METHODS = ("tolist", "numpy", "cpu")
_MISSING = object()


class HostSyncCounter(TorchDispatchMode):
    """Context manager; ``calls`` lists the name of every host read seen inside it.

    ``allow``: (path suffix, function) pairs of code known to read only host-created CPU
    tensors (never a device value, so no sync on CUDA either); reads under such a frame go
    to ``allowed`` instead of ``calls``. Each entry must say why in the calling test.
    """

    def __init__(self, allow: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.allowed: list[str] = []
        self._allow = allow
        self._saved: dict[str, object] = {}

    def _record(self, name: str) -> None:
        stack = traceback.extract_stack()
        if any(f.filename.endswith(path) and f.name == fn for f in stack
               for path, fn in self._allow):
            self.allowed.append(name)
        else:
            self.calls.append(name)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _DATA_DEPENDENT:
            self._record(name)
        elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                     for i in (args[1] if len(args) > 1 else ())):
            self._record("index(bool mask)")
        return func(*args, **(kwargs or {}))

    def _patch(self, name: str) -> None:
        original = getattr(torch.Tensor, name)
        self._saved[name] = torch.Tensor.__dict__.get(name, _MISSING)
        counter = self

        def counted(tensor, *args, **kwargs):
            counter._record(name)
            return original(tensor, *args, **kwargs)

        setattr(torch.Tensor, name, counted)

    def __enter__(self):
        for name in _PY_METHODS:
            self._patch(name)
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        for name, saved in self._saved.items():
            if saved is _MISSING:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, saved)
        self._saved.clear()
        return out
