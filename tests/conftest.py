"""Seeding and device fixtures shared by every test (docs/architecture.md#tests: seed every test
from here)."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    run_slow = os.environ.get("FUSEDOPT_SLOW", "0") == "1"
    skip_slow = pytest.mark.skip(reason="slow: set FUSEDOPT_SLOW=1")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
