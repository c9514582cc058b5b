"""CI smoke test of the host-overhead benchmark (``python -m fusedopt.bench --host``): a tiny run
prints and writes a row for every workload x scenario x contender, with finite times and ratios
to torch fused AdamW, and never overwrites earlier results. Not a timed test: no speed is
asserted (benchmarks are ratios, read by people)."""
from __future__ import annotations

import json
import math

import pytest
import torch

import fusedopt
from fusedopt.bench import cli, host

BACKEND = "cpu" if "cpu" in fusedopt.available_backends("cpu") else "reference"
TINY = ["--backend", BACKEND, "--max-params", "1000", "--many", "20", "--steps", "1",
        "--repeats", "2", "--warmup", "1"]


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_host_mode_has_every_row(tmp_path, capsys, restore_threads):
    out = tmp_path / "host"
    assert cli.main(["--host", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert torch.get_num_threads() == 1  # the mode times one thread

    builders, _ = host.contenders()
    expected = [(w.name, w.tensors, s.name, c) for w in host.host_workloads(1000, 20)
                for s in host.SCENARIOS for c in builders
                if c != host.KERNELS or host.kernels_apply(s, BACKEND)]
    assert any(c == host.KERNELS for *_, c in expected) == (BACKEND == "cpu")
    assert [w[1] for w in expected[::len(expected) // 2]] == [148, 20]
    md = (out / "host.md").read_text()
    for name, tensors, scenario, contender in expected:
        line = f"| {name} ({tensors} tensors) | {scenario} | {contender} |"
        assert line in printed, line
        assert line in md, line

    data = json.loads((out / "host.json").read_text())
    rows = data["rows"]
    assert [(r["workload"], r["tensors"], r["scenario"], r["contender"]) for r in rows] == expected
    for r in rows:
        assert len(r["samples_us"]) == 2 and all(s > 0 for s in r["samples_us"]), r
        assert r["min_us"] == min(r["samples_us"])
        assert 0 < r["best_step_us"] <= r["min_us"], r
        assert math.isfinite(r["ratio_to_torch_fused"]), r
        assert math.isfinite(r["best_ratio_to_torch_fused"]), r
        if r["contender"] == host.TORCH_FUSED:
            assert r["ratio_to_torch_fused"] == r["best_ratio_to_torch_fused"] == 1.0
    assert data["meta"]["threads"] == 1 and data["meta"]["repeats"] == 2
    assert "load_avg_start" in data["meta"] and "load_avg_end" in data["meta"]

    # earlier results are never overwritten
    with pytest.raises(SystemExit):
        host.main([*TINY, "--out", str(out)])
    with pytest.raises(FileExistsError):
        host.write(out, data["meta"], [])
    assert json.loads((out / "host.json").read_text()) == data


def test_host_mode_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        host.main(["--scenarios", "nope", "--no-write"])
    with pytest.raises(SystemExit):
        host.main(["--repeats", "0", "--no-write"])


def test_fsdp_variant_has_every_row(restore_threads):
    """The FSDP2 rows (2 gloo processes): one per contender, finite, ratios to torch's."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed missing")
    rows = host.run_fsdp(1000, BACKEND, steps=1, repeats=1, warmup=1)
    assert [(r.contender, r.scenario) for r in rows] == [
        (name, "fsdp reassigned+clip" if clip else "fsdp reassigned")
        for name, clip in host.FSDP_CONTENDERS]
    for r in rows:
        assert len(r.samples_us) == 1 and r.samples_us[0] > 0 and r.best_step_us > 0, r
        assert math.isfinite(r.ratio_to_torch_fused), r
    assert rows[-1].ratio_to_torch_fused == 1.0
