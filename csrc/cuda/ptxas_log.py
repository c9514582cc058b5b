"""CUDA compiler launcher (CMake's CMAKE_CUDA_COMPILER_LAUNCHER, with FUSEDOPT_CUDA_PTXAS_LOG).

Runs the nvcc command it is given and keeps that command's ``ptxas -v`` report next to the object
as ``<object>.ptxas.txt``, so the report survives incremental builds (tests/test_cuda_build.py
reads every such file to check registers and spills). The ``ptxas info`` lines are left out of
the build log to keep it readable; every other line of nvcc's stderr passes through.
"""
from __future__ import annotations

import re
import subprocess
import sys

_REPORT_LINE = re.compile(r"^(ptxas info|\s+\d+ bytes stack frame)")


def main(argv: list[str]) -> int:
    proc = subprocess.run(argv, stderr=subprocess.PIPE, text=True, check=False)
    if "-o" in argv:
        with open(argv[argv.index("-o") + 1] + ".ptxas.txt", "w", encoding="utf-8") as f:
            f.write(proc.stderr)
    sys.stderr.write("".join(line for line in proc.stderr.splitlines(keepends=True)
                             if not _REPORT_LINE.match(line)))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
