"""Run a test file again in a child process with TRITON_INTERPRET=1.

Triton reads the variable when it is first imported (Note [interpreter mode] in
fusedopt.triton_kernels), so a process that imported it without the variable runs its
interpreter tests in a child; the child's exit code and a " passed" line decide the result.
"""
from __future__ import annotations

import os
import subprocess
import sys


def assert_interpreted_run_passes(path: str, *pytest_args: str) -> None:
    """``pytest -q path *pytest_args`` with TRITON_INTERPRET=1 in a child process passes."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path,
                          *pytest_args], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(path))
    tail = "\n".join((res.stdout + res.stderr).splitlines()[-60:])
    assert res.returncode == 0, f"TRITON_INTERPRET=1 run of {path} failed:\n{tail}"
    assert " passed" in res.stdout, tail
