"""Adagrad under pytest-benchmark (fusedopt backends, torch.optim.Adagrad, roofline) on GPT-2
small, plain and clip+AMP.

    pytest bench/bench_adagrad.py --benchmark-only
"""
import pytest

from fusedopt.bench import pytest_support as support


@pytest.mark.parametrize("contender", support.contenders(), ids=lambda c: c.name)
@pytest.mark.parametrize("spec", support.cases("adagrad", modes=("plain", "clip_amp")),
                         ids=lambda s: s.mode.name)
def test_adagrad(benchmark, spec, contender):
    support.run(benchmark, spec, contender)
