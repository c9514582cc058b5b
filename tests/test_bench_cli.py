"""The benchmark: its CLI end to end at tiny sizes (so it cannot rot), and the pieces its
numbers rest on — the bytes model against the tensors the optimizers really allocate, the
quantiles, the interleaved order, the derived columns (GB/s, % of roofline, speedup)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusedopt import registry
from fusedopt.bench import bytes_model, harness, modes, workloads
from fusedopt.bench.case import Case
from fusedopt.bench.contenders import FUSEDOPT, PEER, ROOFLINE, Contender, Runner, \
    fusedopt_contenders
from fusedopt.bench.results import case_rows

REPO = Path(__file__).resolve().parents[1]
#: Tiny and quick: 3000 params over GPT-2's 148 tensors, 2 rounds, 1 warm-up call.
TINY = ["--max-params", "3000", "--repeats", "2", "--warmup", "1", "--min-sample-ms", "1"]
PEERS = ["torch.forloop", "torch.foreach", "torch.fused"]
CPU = torch.device("cpu")


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # One OpenMP thread: the CI machine is shared, and a descheduled second thread would make
    # every barrier wait (this test checks the plumbing, not the speed).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "fusedopt.bench", *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fusedopt_names() -> set[str]:
    return {c.name for c in fusedopt_contenders(CPU)[0]}


# ---------------------------------------------------------------------------- CLI end to end
def test_short_run_end_to_end(tmp_path):
    proc = _bench(tmp_path, *TINY, "--peers", ",".join(PEERS))
    for text in ("median ms", "p20 ms", "p80 ms", "GB/s", "% copy", "vs best peer",
                 "What each contender runs", "torch.optim.AdamW(fused=True)"):
        assert text in proc.stdout
    assert "[3/3]" in proc.stderr  # progress
    rows = _rows(tmp_path / "short.csv")
    expected = _fusedopt_names() | set(PEERS) | {"roofline.copy", "roofline.read"}
    for mode in ("plain", "clip_amp", "bf16"):
        sel = [r for r in rows if r["mode"] == mode]
        assert {r["contender"] for r in sel} == expected, mode
        best = min((r for r in sel if r["kind"] == PEER), key=lambda r: float(r["median_ms"]))
        for r in sel:
            med, p20, p80 = float(r["median_ms"]), float(r["p20_ms"]), float(r["p80_ms"])
            assert 0 < p20 <= med <= p80
            assert int(r["samples"]) == 2 and float(r["gbps"]) > 0
            assert r["workload"].startswith("gpt2-small@") and int(r["tensors"]) == 148
            if r["kind"] != ROOFLINE:
                assert float(r["speedup"]) == pytest.approx(float(best["median_ms"]) / med)
                assert r["best_peer"] == best["contender"]
        copy = next(r for r in sel if r["contender"] == "roofline.copy")
        assert float(copy["pct_copy"]) == pytest.approx(100.0)
        fused_bpp = {"plain": 28, "clip_amp": 32, "bf16": 22}[mode]
        for r in sel:
            if r["kind"] == FUSEDOPT:
                assert (float(r["bytes_per_param"]), r["state_dtype"]) == (fused_bpp, "fp32")
    torch_bf16 = next(r for r in rows if r["mode"] == "bf16" and r["contender"] == "torch.fused")
    assert (float(torch_bf16["bytes_per_param"]), torch_bf16["state_dtype"]) == (14, "bf16")
    assert (tmp_path / "short.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((tmp_path / "short.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or \
        meta["versions"]["torch"] == torch.__version__
    for key in ("date", "machine", "cpu", "threads", "load_avg_start", "load_avg_end", "seconds"):
        assert meta[key] is not None, key
    assert meta["threads"] == 1 and rows[0]["machine"] == meta["machine"]
    md = (tmp_path / "short.md").read_text()
    assert "| workload | algorithm | mode | contender |" in md and "torch.fused" in md
    # the main job ends with the host-overhead table (fusedopt.bench.host), written beside
    assert "Host overhead of one optimizer step" in proc.stdout
    host_md = (tmp_path / "short-host" / "host.md").read_text()
    for scenario in ("reassigned", "kept", "clip+amp+telemetry"):
        assert f"| {scenario} | fusedopt |" in host_md and f"| {scenario} | torch.fused |" in host_md


@pytest.mark.slow  # ~45 s on 2 loaded cores; every algorithm's path is covered fast below
def test_full_plan_runs_every_algorithm_and_the_sweep(tmp_path):
    _bench(tmp_path, *TINY, "--no-host", "--full", "--sweep-sizes", "4096", "--peers",
           "torch.fused")
    rows = _rows(tmp_path / "full.csv")
    fused = {(r["workload"].split("@")[0], r["algorithm"], r["mode"])
             for r in rows if r["kind"] == FUSEDOPT}
    assert {("gpt2-small", "adamw", m) for m in modes.MODES} <= fused
    assert {("llama-1b-like", "adamw", m) for m in ("plain", "clip_amp", "bf16")} <= fused
    for algo in registry.ALGORITHMS:
        assert {("gpt2-small", algo, "plain"), ("gpt2-small", algo, "clip_amp")} <= fused, algo
    assert {"sweep-1x4.1K", "sweep-256x16"} <= {r["workload"] for r in rows}
    meta = json.loads((tmp_path / "full.json").read_text())
    reasons = {(s["case"].split()[1], s["contender"]): s["reason"] for s in meta["skipped"]}
    assert "torch.optim has no adabelief" in reasons[("adabelief", "torch.fused")]
    assert ("adamw", "torch.fused") not in reasons
    assert (tmp_path / "full-sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_pytest_benchmark_files_run(tmp_path):
    pytest.importorskip("pytest_benchmark")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FUSEDOPT_BENCH_MAX_PARAMS": "3000",
           "FUSEDOPT_BENCH_PEERS": "torch.fused"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         str(REPO / "bench" / "bench_adamw.py"), str(REPO / "bench" / "bench_adagrad.py")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_bench_cpu_adamw_script_runs(tmp_path):
    """bench/bench_cpu_adamw.py (issue 4's focused targets) end to end on a tiny GPT-2 small:
    every scenario's contenders and its in-place roofline row, in the Markdown and the JSON."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_cpu_adamw.py"), "--max-params", "3000",
         "--repeats", "3", "--warmup", "1", "--no-deepspeed", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "bench_cpu_adamw.json").read_text())
    rows = report["rows"]
    scenarios = {"fp32 AdamW", "clip + AMP + AdamW", "bf16 params"}
    assert {r["scenario"] for r in rows} == scenarios
    for scenario in scenarios:
        mine = [r for r in rows if r["scenario"] == scenario]
        assert [r["contender"] for r in mine][-1] == "roofline: in-place copy"
        assert mine[-1]["pct_copy_roofline"] == pytest.approx(100.0)
        assert mine[-1]["fusedopt_speedup"] is None and mine[0]["fusedopt_speedup"] == 1.0
        assert all(r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
                   for r in mine)
    md = (tmp_path / "bench_cpu_adamw.md").read_text()
    assert md.startswith("# bench_cpu_adamw: gpt2-small: 148 tensors,")
    assert md.count("| roofline: in-place copy |") == 3


@pytest.mark.slow  # a ~40 s inductor compile per mode
def test_torch_compile_peer_runs(tmp_path):
    _bench(tmp_path, *TINY, "--no-host", "--peers", "torch.compile", "--modes",
           "plain,clip_amp")
    rows = _rows(tmp_path / "short.csv")
    assert {r["mode"] for r in rows if r["contender"] == "torch.compile"} == {"plain", "clip_amp"}


@pytest.mark.parametrize("mode", list(modes.MODES))
@pytest.mark.parametrize("algo", list(registry.ALGORITHMS))
def test_every_algorithm_steps_through_its_contenders(algo, mode):
    """What --full runs per case, fast: every fusedopt backend and torch peer is built on a
    tiny case of every algorithm and mode, and two of its timed steps change the params."""
    from fusedopt.bench.contenders import Skip
    from fusedopt.bench.peers import peer_contenders
    case = Case(workloads.Workload("t", ((4, 3), (5,))), algo, modes.get(mode), CPU)
    case.allocate()
    built = 0
    for c in fusedopt_contenders(CPU)[0] + peer_contenders(CPU, PEERS)[0]:
        before = [p.detach().clone() for p in case.params]
        try:
            runner = c.build(case)
        except Skip as exc:
            assert c.kind == PEER and registry.get(algo).torch_equivalent is None or \
                "fused" in c.name, f"{c.name}: {exc}"
            continue
        runner.step()
        runner.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, case.params)), c.name
        built += 1
    assert built >= 1 + 2 * (registry.get(algo).torch_equivalent is not None)


# ---------------------------------------------------------------------------- bytes model
@pytest.mark.parametrize("algo, mode, expected", [
    ("adamw", "plain", 28), ("adamw", "clip", 32), ("adamw", "clip_amp", 32),
    ("adamw", "bf16", 22), ("adamw", "telemetry", 28), ("amsgrad", "plain", 36),
    ("rmsprop", "plain", 20), ("adagrad", "clip_amp", 24), ("adagrad_norm", "plain", 16),
    ("nsgd", "plain", 16), ("nsgd", "clip", 16), ("iansgd", "plain", 16),
    ("iansgd", "clip", 20), ("nsgdm", "plain", 24), ("nsgdm", "bf16", 18),
])
def test_fused_bytes(algo, mode, expected):
    m = modes.get(mode)
    sdt = bytes_model.fusedopt_state_dtype(m) if registry.get(algo).state_keys else None
    assert bytes_model.fused_bytes(algo, m, sdt) == expected


def test_torch_composition_bytes_is_designs_48():
    m = modes.get("clip_amp")
    assert bytes_model.torch_composition_bytes("adamw", m, torch.float32) == 48
    assert bytes_model.torch_composition_bytes("adamw", modes.get("clip"), torch.float32) == 40


@pytest.mark.parametrize("algo", list(registry.ALGORITHMS))
@pytest.mark.parametrize("mode", ["plain", "bf16"])
def test_resident_bytes_match_what_the_optimizer_allocates(algo, mode):
    m = modes.get(mode)
    case = Case(workloads.Workload("t", ((7, 3), (5,))), algo, m, CPU)
    case.allocate()
    opt = case.info.make(case.params, backend="reference")
    if case.info.needs_normalizer:
        opt.record_normalizer()
    opt.step(**({"loss": case.loss} if case.info.needs_loss else {}))
    held = sum(p.nbytes + p.grad.nbytes for p in case.params)
    for p in case.params:
        held += sum(v.nbytes for k, v in opt.state[p].items()
                    if isinstance(v, torch.Tensor) and v.numel() == p.numel())
    sdt = bytes_model.fusedopt_state_dtype(m) if case.info.state_keys else None
    assert held == bytes_model.resident_bytes(algo, m, sdt) * case.workload.numel


# ---------------------------------------------------------------------------- harness
def test_quantile_matches_numpy():
    xs = list(np.random.default_rng(0).exponential(size=11))
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert harness.quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))


def test_interleaved_rotates_the_order_and_drops_a_failing_contender():
    calls: list[str] = []

    def make(name: str, fail_at: int | None = None):
        def fn():
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError("boom")
        return fn

    fns = {"a": make("a"), "b": make("b"), "c": make("c"), "d": make("d", fail_at=3)}
    timings, failures = harness.interleaved(fns, harness.Clock(CPU), warmup=1, repeats=3,
                                            min_sample_s=0.0)
    assert calls[:4] == ["a", "b", "c", "d"]  # warm-up
    # round r starts at contender r; d fails on its third call (round 2) and leaves
    assert calls[4:] == ["a", "b", "c", "d", "b", "c", "d", "a", "c", "a", "b"]
    assert failures == {"d": "RuntimeError: boom"}
    assert sorted(timings) == ["a", "b", "c"] and all(len(t.samples) == 3
                                                      for t in timings.values())


def test_case_rows_derive_gbps_roofline_share_and_speedup():
    case = Case(workloads.Workload("w", ((1000,),)), "adamw", modes.get("plain"), CPU)
    case.allocate()
    opt = torch.optim.AdamW(case.params)
    opt.step()  # fp32 states: 28 B/param
    noop = Runner(lambda: None, "noop", opt)
    setups = [(Contender("fusedopt.x", FUSEDOPT, None), noop),
              (Contender("torch.a", PEER, None), noop),
              (Contender("torch.b", PEER, None), noop),
              (Contender("roofline.copy", ROOFLINE, None), Runner(lambda: None, "c", None, 16000))]
    ms = {"fusedopt.x": 1.0, "torch.a": 2.0, "torch.b": 3.0, "roofline.copy": 0.5}
    timings = {k: harness.Timing([v / 1e3] * 3, 1) for k, v in ms.items()}
    rows = {r.contender: r for r in case_rows(case, setups, timings, load1=0.0)}
    assert rows["fusedopt.x"].gbps == pytest.approx(28 * 1000 / 1e-3 / 1e9)
    assert rows["roofline.copy"].gbps == pytest.approx(16000 / 0.5e-3 / 1e9)
    assert rows["fusedopt.x"].pct_copy == pytest.approx(100 * 0.028 / 0.032)
    assert (rows["fusedopt.x"].speedup, rows["torch.a"].speedup) == (2.0, 1.0)
    assert rows["torch.b"].speedup == pytest.approx(2 / 3)
    assert rows["roofline.copy"].speedup is None
    assert {r.best_peer for r in rows.values() if r.kind != ROOFLINE} == {"torch.a"}


# ---------------------------------------------------------------------------- workloads
def test_packaged_workloads_have_the_documented_sizes():
    gpt2 = workloads.named("gpt2-small")
    assert (gpt2.tensors, gpt2.numel) == (148, 124_439_808)
    assert workloads.named("llama-1b-like").numel == 1_498_482_688


@pytest.mark.parametrize("limit", [3000, 1_000_000, 50_000_000])
def test_scaled_keeps_tensor_count_and_fits(limit):
    w = workloads.scaled(workloads.named("llama-1b-like"), limit)
    assert w.tensors == 147 and 0.5 * limit < w.numel <= limit
    assert w.name.startswith("llama-1b-like@")


def test_sweep_is_one_tensor_and_many_of_each_size():
    ws = workloads.sweep((4096, 1 << 20))
    assert [(w.tensors, w.numel) for w in ws] == [(1, 4096), (256, 4096), (1, 1 << 20),
                                                  (256, 1 << 20)]
