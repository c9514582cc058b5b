"""Triton kernels of fusedopt: every algorithm as one multi-tensor launch over pointer tables.

Installed as ``fusedopt.triton_kernels``; :mod:`fusedopt.backends.triton_backend` binds them to
the kernel contract. Layout: :mod:`._common` (host constants, pointer tables), :mod:`._device`
(shared ``@triton.jit`` helpers), :mod:`._launch` (configs, autotuning), :mod:`.norm` (the
prologue's norm pass), :mod:`.adam`, :mod:`.adagrad`, :mod:`.sgd` (one per algorithm family)
and :mod:`.finish` (step counts and fixed-order sums after an update).

Note [interpreter mode]: ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates a function,
so the mode of these kernels is fixed when :mod:`._device` is first imported: compiled for GPU
tensors, or interpreted (numpy on the host) for CPU tensors when ``TRITON_INTERPRET=1`` was set.
This package's ``__init__`` and :mod:`._common` decorate nothing, and the backend imports the
kernel modules only at its first launch, so setting the variable any time before that works.
"""
