"""Count the passes a training step makes over gradient memory (the table of
docs/architecture.md#passes-over-memory).

Two kinds of pass are seen, and each is counted once per grad tensor it reads:

* a torch op (``_amp_foreach_non_finite_check_and_unscale_``, ``_foreach_norm``,
  ``_foreach_mul_``, ``_fused_adamw_``, ...) whose arguments include the grad's storage, seen by a
  ``TorchDispatchMode``; view ops (``detach``, ``view``, ...) read nothing and are not counted;
* a call of a fusedopt backend's contract function, patched on the backend module: by the
  kernel contract (:mod:`fusedopt.backends`) ``grad_prologue_`` with ``compute_norm=True`` is
  one pass over the grads it is given, an update function one pass over its bucket's grads
  (``grad_prologue_`` with ``compute_norm=False`` touches no grad memory). Inside such a call the
  dispatch mode is paused: the reference backend's many small torch ops are its implementation
  of one pass, and a native backend's single native call is invisible to the dispatcher anyway.

The second kind rests on the contract; that each backend's pass really reads its grads once is
what its kernels and the benchmark byte model (``fusedopt.bench.bytes_model``) are checked for.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import fusedopt

#: contract functions and how to find the grads each one reads (None: it reads none this call)
_CONTRACT_GRADS: dict[str, Callable[..., list[Tensor] | None]] = {
    "grad_prologue_": lambda grads, *a, compute_norm, **kw: grads if compute_norm else None,
    "adam_step_": lambda b, *a, **kw: b.grads,
    "elementwise_step_": lambda b, *a, **kw: b.grads,
    "momentum_step_": lambda b, *a, **kw: b.grads,
    # along the momentum the SGD pass reads no grad (unless telemetry sums (coef g)^2)
    "sgd_step_": lambda b, *a, direction, telemetry, **kw: (
        b.grads if direction == "grad" or telemetry else None),
}


class GradPassCounter(TorchDispatchMode):
    """Context manager: ``passes[i]`` lists the name of every pass that read grad ``i``.

    ``backend``: the name of the fusedopt backend whose contract calls are counted (its module
    functions are patched for the duration of the block through ``monkeypatch``).
    """

    def __init__(self, grads: list[Tensor], monkeypatch: Any, backend: str | None = None) -> None:
        super().__init__()
        self._index = {g.untyped_storage().data_ptr(): i for i, g in enumerate(grads)}
        self.passes: list[list[str]] = [[] for _ in grads]
        self._paused = False
        if backend is not None:
            module = fusedopt.backends.load(backend)
            for name, which in _CONTRACT_GRADS.items():
                monkeypatch.setattr(module, name, self._wrap(getattr(module, name), name, which))

    def _record(self, tensors: list[Tensor], name: str) -> None:
        seen = set()
        for t in tensors:
            i = self._index.get(t.untyped_storage().data_ptr()) if t.numel() else None
            if i is not None and i not in seen:
                seen.add(i)
                self.passes[i].append(name)

    @contextlib.contextmanager
    def _pause(self) -> Iterator[None]:
        was, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was

    def _wrap(self, fn: Callable, name: str, which: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if not self._paused:
                grads = which(*args, **kwargs)
                if grads is not None:
                    self._record(list(grads), f"fusedopt.{name}")
            with self._pause():
                return fn(*args, **kwargs)
        return counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self._paused and not func.is_view:
            tensors = [t for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, Tensor)]
            self._record(tensors, func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
