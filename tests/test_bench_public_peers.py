"""The benchmark's public peers of Lion, Adan and Schedule-Free AdamW (pytorch-optimizer,
lion-pytorch, schedulefree): which cases select them, the hyperparameters and flags they are
built with, that every contender keeps seeing the same grads (schedulefree rewrites them; the
bench restores them outside the timed region), the bytes model of the three algorithms, and the
CLI rows. Nothing here is timed; a peer that is not installed is skipped (they are test-only
extras, never needed to import fusedopt)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedopt import registry
from fusedopt.bench import bytes_model, harness, modes, peers, suite, workloads
from fusedopt.bench.case import Case
from fusedopt.bench.contenders import PEER, Skip

CPU = torch.device("cpu")
NEW = ("lion", "adan", "schedule_free_adamw")
#: (peer, algorithm) for every entry of the table
PAIRS = [(i.package, a) for a, impls in peers.PUBLIC.items() for i in impls]


def _case(algo: str, mode: str = "plain") -> Case:
    case = Case(workloads.Workload("t", ((4, 3), (5,), (2, 2, 2))), algo, modes.get(mode), CPU)
    case.allocate()
    return case


def _peer(name: str):
    pytest.importorskip(name)
    found, notes = peers.peer_contenders(CPU, [name])
    assert [c.name for c in found] == [name] and notes == []
    return found[0]


def test_table_covers_the_new_algorithms_with_the_named_public_implementations():
    assert set(peers.PUBLIC) == set(NEW)
    assert {(i.package, i.attr, a) for a, impls in peers.PUBLIC.items() for i in impls} == {
        ("pytorch_optimizer", "Lion", "lion"), ("lion_pytorch", "Lion", "lion"),
        ("pytorch_optimizer", "Adan", "adan"),
        ("schedulefree", "AdamWScheduleFree", "schedule_free_adamw")}
    assert peers.PEERS["pytorch_optimizer"].algorithms == ("lion", "adan")
    assert peers.PEERS["lion_pytorch"].algorithms == ("lion",)
    assert peers.PEERS["schedulefree"].algorithms == ("schedule_free_adamw",)


@pytest.mark.parametrize("algo", NEW + ("adamw",))
def test_a_public_peer_is_selected_only_for_its_algorithms(algo):
    spec = suite.plan(["gpt2-small"], [algo], ["plain"], max_params=3000)[0]
    contenders = [peers.Contender(n, PEER, None, s.algorithms) for n, s in peers.PEERS.items()]
    chosen = {c.name for c in contenders if spec.selects(c)}
    for name in ("pytorch_optimizer", "lion_pytorch", "schedulefree"):
        assert (name in chosen) == (algo in peers.public_algorithms(name)), name
    assert "torch.fused" in chosen  # the torch peers still decide for themselves (Skip)


def test_a_missing_public_package_is_a_note_not_an_error(monkeypatch):
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec",
                        lambda name, *a: None if name == "schedulefree" else real(name, *a))
    found, notes = peers.peer_contenders(CPU, ["schedulefree", "torch.fused"])
    assert [c.name for c in found] == ["torch.fused"]
    assert notes == ["schedulefree skipped: schedulefree is not installed"]


def test_a_peer_asked_for_another_algorithm_skips_with_the_reason():
    pytest.importorskip("lion_pytorch")
    with pytest.raises(Skip, match="lion_pytorch has no adan"):
        peers.PEERS["lion_pytorch"].build(_case("adan"))


@pytest.mark.parametrize("peer, algo", PAIRS)
def test_public_peer_gets_the_registry_hyperparameters(peer, algo):
    contender = _peer(peer)
    case = _case(algo)
    runner = contender.build(case)
    group = runner.optimizer.param_groups[0]
    kw = registry.get(algo).kwargs
    for key in ("lr", "weight_decay", "eps", "warmup_steps"):
        if key in kw:
            assert group[key] == kw[key], key
    assert tuple(group["betas"]) == tuple(kw["betas"])
    if algo == "adan":  # fusedopt's default proximal decay = pytorch-optimizer's default
        assert group["weight_decouple"] is False
    if peer == "pytorch_optimizer":  # its default foreach=None takes the foreach path on CPU
        assert runner.impl.endswith("[its foreach path]")
    if peer == "schedulefree":
        assert group["foreach"] is True and group["train_mode"] is True
        assert "foreach=True" in runner.impl


@pytest.mark.parametrize("peer, algo", PAIRS)
@pytest.mark.parametrize("mode", ["plain", "clip_amp", "bf16"])
def test_every_contender_keeps_seeing_the_same_grads(peer, algo, mode):
    """The contenders of a case share its grads: a peer's call (through the harness, with its
    untimed hook) must leave them bitwise as they were, and still move the params."""
    contender = _peer(peer)
    case = _case(algo, mode)
    runner = contender.build(case)
    grads = [p.grad.clone() for p in case.params]
    params = [p.detach().clone() for p in case.params]
    clock = harness.Clock(CPU)
    for _ in range(3):  # warm-up, then samples of 2 calls: the hook runs after every call
        clock.per_call(runner.step, 2 if _ else 1, runner.after)
    for p, g in zip(case.params, grads):
        assert torch.equal(p.grad, g)
    assert any(not torch.equal(p, q) for p, q in zip(case.params, params))


@pytest.mark.parametrize("peer, algo", PAIRS)
def test_rewrites_grads_says_which_peers_need_the_restore(peer, algo):
    """The flag is true exactly for the implementations whose step writes into p.grad (so the
    restore is there where it is needed, and costs nothing elsewhere)."""
    contender = _peer(peer)
    case = _case(algo)
    runner = contender.build(case)
    grads = [p.grad.clone() for p in case.params]
    runner.step()
    changed = any(not torch.equal(p.grad, g) for p, g in zip(case.params, grads))
    flag = next(i for i in peers.PUBLIC[algo] if i.package == peer).rewrites_grads
    assert changed == flag
    assert (runner.after is not None) == flag


def test_after_hook_runs_after_every_call_outside_the_timed_region(monkeypatch):
    """A fake clock that only the timed function advances: the hook's time is not counted,
    and the hook follows each call (warm-up and rounds alike)."""
    now = [0.0]
    calls: list[str] = []
    monkeypatch.setattr(harness.time, "perf_counter", lambda: now[0])

    def fn():
        calls.append("fn")
        now[0] += 1.0

    def after():
        calls.append("after")
        now[0] += 100.0

    clock = harness.Clock(CPU)
    assert clock.per_call(fn, 3, after) == 1.0
    assert calls == ["fn", "after"] * 3
    calls.clear()
    timings, failures = harness.interleaved({"a": fn, "b": lambda: calls.append("b")}, clock,
                                            warmup=1, repeats=2, min_sample_s=0.0,
                                            after={"a": after})
    assert failures == {} and timings["a"].samples == [1.0, 1.0]
    assert calls == ["fn", "after", "b", "fn", "after", "b", "b", "fn", "after"]


@pytest.mark.parametrize("algo, mode, expected", [
    ("lion", "plain", 20), ("lion", "clip_amp", 24), ("lion", "bf16", 14),
    ("adan", "plain", 44), ("adan", "clip_amp", 48), ("adan", "bf16", 38),
    ("schedule_free_adamw", "plain", 28), ("schedule_free_adamw", "clip_amp", 32),
    ("schedule_free_adamw", "bf16", 22),
])
def test_bytes_of_the_new_algorithms(algo, mode, expected):
    """p and g once, each state read and written (from the registry's state_keys: Lion 1,
    Adan 4, Schedule-Free 2), one more read of g for the norm pass under clip/AMP."""
    m = modes.get(mode)
    assert bytes_model.fused_bytes(algo, m, bytes_model.fusedopt_state_dtype(m)) == expected


def test_bytes_model_follows_the_state_keys(monkeypatch):
    """The state count comes from the registry entry: one more state key, 8 more bytes."""
    info = registry.get("lion")
    m = modes.get("plain")
    more = type(info)(**{**vars(info), "state_keys": info.state_keys + ("extra",)})
    monkeypatch.setitem(registry.ALGORITHMS, "lion", more)
    assert bytes_model.fused_bytes("lion", m, torch.float32) == 28


def test_cli_runs_the_new_algorithms_against_their_public_peers(tmp_path):
    for name in ("pytorch_optimizer", "lion_pytorch", "schedulefree"):
        pytest.importorskip(name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fusedopt.bench", "--algorithms", ",".join(NEW),
         "--modes", "plain", "--peers", "pytorch_optimizer,lion_pytorch,schedulefree",
         "--max-params", "3000", "--repeats", "2", "--warmup", "1", "--min-sample-ms", "1",
         "--no-plot", "--no-host", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "short.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["algorithm"], r["contender"]) for r in rows if r["kind"] == PEER}
    assert got == {("lion", "pytorch_optimizer"), ("lion", "lion_pytorch"),
                   ("adan", "pytorch_optimizer"), ("schedule_free_adamw", "schedulefree")}
    for r in rows:
        if r["kind"] != "roofline":
            assert r["state_dtype"] == "fp32"
            assert float(r["bytes_per_param"]) == {"lion": 20, "adan": 44,
                                                   "schedule_free_adamw": 28}[r["algorithm"]]
            assert float(r["speedup"]) > 0 and r["best_peer"] != ""
    md = (tmp_path / "short.md").read_text()
    assert "schedulefree.AdamWScheduleFree(" in md and "foreach=True" in md
    assert "grads restored after each call, untimed" in md
    assert "Skipped:" not in md  # no peer is offered a case it cannot run
