"""AdamW under pytest-benchmark: every fusedopt backend, installed peer and roofline kernel on
GPT-2 small in the plain, clip+AMP and bf16 modes.

    pytest bench/bench_adamw.py --benchmark-only
    FUSEDOPT_BENCH_MAX_PARAMS=3000 pytest bench/bench_adamw.py --benchmark-disable   # smoke

For speed claims use ``python -m fusedopt.bench`` (interleaved contenders, one run).
"""
import pytest

from fusedopt.bench import pytest_support as support


@pytest.mark.parametrize("contender", support.contenders(), ids=lambda c: c.name)
@pytest.mark.parametrize("spec", support.cases("adamw"), ids=lambda s: s.mode.name)
def test_adamw(benchmark, spec, contender):
    support.run(benchmark, spec, contender)
