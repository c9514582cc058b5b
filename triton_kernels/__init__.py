"""Triton kernels of fusedopt: every algorithm as one multi-tensor launch over pointer tables.

Installed as ``fusedopt.triton_kernels``; :mod:`fusedopt.backends.triton_backend` binds them to
the kernel contract. Layout: :mod:`._common` (host constants, pointer tables), :mod:`._device`
(shared ``@triton.jit`` helpers), :mod:`._launch` (configs, autotuning), :mod:`.norm` (the
prologue's norm pass), :mod:`.adam`, :mod:`.sgd` (one per algorithm family),
:mod:`.elementwise` (the one kernel of every element-wise algorithm; :mod:`.adagrad`,
:mod:`.lion`, :mod:`.adan`, :mod:`.schedule_free_adamw` hold only their ``scalars`` and
``update``), :mod:`.finish` (step
counts and fixed-order sums after an update) and :mod:`.compile_check` (compiles everything for
sm_80/sm_90 without a GPU and checks the PTX).

Note [interpreter mode]: ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates a function:
Triton's own library (``tl.sum``, ...) when ``triton`` is first imported, these kernels when
:mod:`._device` is first imported. To run on CPU tensors the variable must be set before the
process imports ``triton`` at all; a process that imported it without the variable cannot
switch (an interpreted kernel calling a compiled ``tl.sum`` fails). This package's ``__init__``
and :mod:`._common` decorate nothing, and the backend imports the kernel modules at its first
launch; :func:`fusedopt.backends.triton_backend.supports` checks both.
"""
