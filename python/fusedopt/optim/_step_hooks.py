"""torch.optim's step wrapper, at the cost of what is in use.

``torch.optim.Optimizer`` wraps every subclass's ``step`` (``profile_hook_step``) to run the
global and per-optimizer step pre/post hooks inside a profiler ``record_function`` range named
``Optimizer.step#<Class>.step``. Entering and leaving that range are two dispatcher calls even
when no profiler runs: ~25 µs of a ~100 µs fused step on small models (docs/host-overhead.md).
:func:`hooked_step` keeps the same protocol — the same hooks in the same order, a pre hook may
replace the arguments, ``_optimizer_step_code`` after the step, the same range name while
``torch.autograd``'s profiler is enabled (``torch.profiler.profile``, ``emit_nvtx``, ...) —
and runs the step under ``no_grad``. It marks the function ``hooked`` so that torch does not
wrap it again. Not seen without an enabled profiler: the range, by RecordFunction observers
that run alone (an ExecutionTraceObserver without a profiler).
"""
from __future__ import annotations

import functools
from itertools import chain
from typing import Any, Callable

import torch
from torch.optim import optimizer as _torch_optimizer

_profiler_enabled = torch._C._autograd._profiler_enabled
_set_grad_enabled = torch._C._set_grad_enabled
_is_grad_enabled = torch.is_grad_enabled
_is_compiling = torch.compiler.is_compiling


def _run(func: Callable, self: Any, args: tuple, kwargs: dict, compiling: bool) -> Any:
    pre = _torch_optimizer._global_optimizer_pre_hooks
    if pre or self._optimizer_step_pre_hooks:
        for hook in chain(pre.values(), self._optimizer_step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{func} must return None or a tuple of (new_args, "
                                       f"new_kwargs), but got {result}.")
    if compiling:  # what dynamo traces: the context manager it knows
        with torch.no_grad():
            out = func(self, *args, **kwargs)
    else:
        grad = _is_grad_enabled()
        _set_grad_enabled(False)
        try:
            out = func(self, *args, **kwargs)
        finally:
            _set_grad_enabled(grad)
    self._optimizer_step_code()
    post = _torch_optimizer._global_optimizer_post_hooks
    if post or self._optimizer_step_post_hooks:
        for hook in chain(self._optimizer_step_post_hooks.values(), post.values()):
            hook(self, args, kwargs)
    return out


def hooked_step(func: Callable) -> Callable:
    """``func`` (a ``step(self, ...)``) with torch.optim's hooks and profiler range, under
    ``no_grad`` (the module docstring says what differs from torch's wrapper)."""

    @functools.wraps(func)
    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        # under torch.compile the range is traced as torch's wrapper traces it (dynamo
        # cannot trace the profiler query, a bool from C)
        compiling = _is_compiling()
        if compiling or _profiler_enabled():
            name = f"Optimizer.step#{self.__class__.__name__}.step"
            with torch.autograd.profiler.record_function(name):
                return _run(func, self, args, kwargs, compiling)
        return _run(func, self, args, kwargs, False)

    step.hooked = True  # type: ignore[attr-defined]  # torch's marker: do not wrap again
    return step
