"""The fuzz driver (tests/fuzz_plan.py) against the native cpu backend, in a subprocess: a
crash is a failure of this test with the case that caused it, not a dead test run. CI runs
FUZZ_EXAMPLES examples; ``FUSEDOPT_SLOW=1`` runs 2,000. The same driver runs under ASan+UBSan
in tests/test_sanitizers.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusedopt import backends

HERE = Path(__file__).resolve().parent
FUZZ_EXAMPLES = 150


@pytest.mark.skipif("cpu" not in backends.available_backends("cpu"), reason="no cpu backend")
def test_fuzz_right_result_or_clear_error():
    n = 2000 if os.environ.get("FUSEDOPT_SLOW") == "1" else FUZZ_EXAMPLES
    done = subprocess.run([sys.executable, str(HERE / "fuzz_plan.py"), "--examples", str(n),
                           "--backend", "cpu"], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    out = done.stdout + done.stderr
    last_case = [line for line in done.stdout.splitlines() if line.startswith("case ")][-1:]
    assert done.returncode == 0, (f"exit code {done.returncode} (negative: a crash) at "
                                  f"{last_case}\n{out[-4000:]}")
    summary = [line for line in done.stdout.splitlines() if line.startswith("fuzz:")]
    assert summary and summary[0].startswith(f"fuzz: {n} examples"), out[-2000:]
    print(summary[0])
