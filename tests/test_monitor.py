"""ConvergenceMonitor: the plateau rule, the P4 quadratic, no host sync, the logs and the plot.

The rule is tested twice: on synthetic series where the firing step follows from the rule by
hand (exact assertions), and on P4's quadratic (Dereich, Graeber & Jentzen; d = 1,
X ~ N(1, 1), loss (theta - X)^2, batch 1, Adam lr 1e-2), where it must fire at a constant lr and
must not fire when a schedule takes the lr down.
"""
from __future__ import annotations

import csv
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import ExponentialLR

import fusedopt
from fusedopt.monitor import COLUMNS, ConvergenceMonitor, PlateauDetector, PlateauRule
from fusedopt.monitor.__main__ import main as monitor_main
from fusedopt.monitor.p4 import run_p4_quadratic
from fusedopt.monitor.plot import load_run

from host_sync import HostSyncCounter

#: the reference's lerp reads ``float()`` of a CPU tensor it builds from a Python float
#: (python/fusedopt/reference/adam_family.py::lerp); never a device value, no sync on CUDA.
REFERENCE_HOST_READS = (("fusedopt/reference/adam_family.py", "lerp"),
                        # the reference's IEEE fp64 sqrt goes through numpy for CPU tensors
                        # only (a device tensor takes torch.sqrt): no device value is read
                        ("fusedopt/reference/prologue.py", "ieee_sqrt"))
TINY = torch.finfo(torch.float64).tiny  # the monitor's floor under param_norm (0 on a skip)


# ---------------------------------------------------------------------- the rule, exactly
def _f64(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _feed(rule: PlateauRule, steps: int, loss, ratio, lr=lambda t: 1e-3,
          skipped=lambda t: False) -> tuple[list[int], list[int]]:
    """Run a detector over ``t = 1..steps``; returns (plateau window ends, firing steps)."""
    det = PlateauDetector(rule, "cpu")
    plateaus, fired = [], []
    for t in range(1, steps + 1):
        s = det.observe(_f64(loss(t)), _f64(ratio(t)), _f64(lr(t)), _f64(float(skipped(t))))
        if s is not None:
            _, _, plateau, fire = s.tolist()
            if plateau:
                plateaus.append(t)
            if fire:
                fired.append(t)
    return plateaus, fired


RULE = PlateauRule(window=20, batches=4, patience=3)


def test_flat_series_fires_at_the_earliest_step_and_every_patience_windows():
    """Window 1 has no predecessor; windows 2, 3, 4 are plateaus: fire at 4 * 20 = 80."""
    plateaus, fired = _feed(RULE, 200, loss=lambda t: 1.0, ratio=lambda t: 1e-3)
    assert plateaus == list(range(40, 201, 20))
    assert fired == [80, 140, 200]


def test_shrinking_update_ratio_never_fires():
    """r drops 10% per window (> rtol 1% and > z standard errors of the in-window trend)."""
    _, fired = _feed(RULE, 400, loss=lambda t: 1.0, ratio=lambda t: 1e-3 * 0.9 ** (t / 20))
    assert fired == []


def test_decreasing_loss_never_fires():
    _, fired = _feed(RULE, 400, loss=lambda t: 10.0 - t / 100, ratio=lambda t: 1e-3)
    assert fired == []


def test_loss_increase_counts_as_flat():
    """Only a drop is progress: a loss that grows at a constant lr is a plateau too."""
    _, fired = _feed(RULE, 100, loss=lambda t: 1.0 + t / 100, ratio=lambda t: 1e-3)
    assert fired == [80]


def test_lr_change_blocks_the_two_windows_around_it():
    """lr halves at step 90 (window 81..100): windows 100 and 120 span two lrs, the streak
    restarts at 140 and fires at 180 instead of 140."""
    plateaus, fired = _feed(RULE, 200, loss=lambda t: 1.0, ratio=lambda t: 1e-3,
                            lr=lambda t: 1e-3 if t < 90 else 5e-4)
    assert 100 not in plateaus and 120 not in plateaus
    assert fired == [80, 180]


def test_lr_tolerance():
    wobble = lambda t: 1e-3 * (1 + 1e-4 * (t % 2))  # noqa: E731 - 1e-4 relative ripple
    assert _feed(RULE, 80, lambda t: 1.0, lambda t: 1e-3, lr=wobble)[1] == [80]
    strict = PlateauRule(window=20, batches=4, patience=3, lr_rtol=1e-5)
    assert _feed(strict, 80, lambda t: 1.0, lambda t: 1e-3, lr=wobble)[1] == []


def test_skipped_steps_are_left_out():
    """found_inf steps with a NaN loss change nothing; a fully skipped window is not judged."""
    every_third = lambda t: t % 3 == 0  # noqa: E731
    nan_loss = lambda t: math.nan if every_third(t) else 1.0  # noqa: E731
    assert _feed(RULE, 200, nan_loss, lambda t: 1e-3, skipped=every_third)[1] == [80, 140, 200]
    window_3 = lambda t: 41 <= t <= 60  # noqa: E731 - window 3 skipped entirely
    plateaus, fired = _feed(RULE, 200, lambda t: 1.0, lambda t: 1e-3, skipped=window_3)
    assert 60 not in plateaus and 80 not in plateaus
    assert fired == [140, 200]


def test_batch_means_absorb_correlated_noise():
    """AR(1) noise (correlation time 10 steps) on a flat series: still a plateau; the same
    noise on an r that shrinks 20% per window: never. Sub-batches of 50 steps >> 10."""
    rule = PlateauRule(window=500, batches=10, patience=3)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(2, 6001, generator=gen, dtype=torch.float64).tolist()
    ar = [[0.0] * 6001, [0.0] * 6001]
    for k in range(2):
        for t in range(1, 6001):
            ar[k][t] = 0.9 * ar[k][t - 1] + math.sqrt(1 - 0.81) * eps[k][t]
    loss = lambda t: 1.0 + 0.3 * ar[0][t]  # noqa: E731
    flat = _feed(rule, 6000, loss, lambda t: 1e-3 * (1 + 0.3 * ar[1][t]))[1]
    shrinking = _feed(rule, 6000, loss,
                      lambda t: 1e-3 * 0.8 ** (t / 500) * (1 + 0.3 * ar[1][t]))[1]
    assert flat and flat[0] <= 3000
    assert shrinking == []


@pytest.mark.parametrize("kwargs", [dict(window=10, batches=3), dict(batches=1, window=10),
                                    dict(patience=0), dict(rtol=-1.0), dict(z=math.nan)])
def test_rule_validation(kwargs):
    with pytest.raises(ValueError):
        PlateauRule(**kwargs)


# ---------------------------------------------------------------------- P4's quadratic
W = 500  # the default window: sub-batches of 50 steps, well above the ~100-step time theta
#          needs to forget at lr 1e-2 (Adam's step ~ lr * (theta - 1), so a rate of ~lr)
STEPS = 6000


@pytest.fixture(scope="module")
def p4(tmp_path_factory):
    """``p4(policy) -> (monitor, run columns, csv path)``, each policy run once per module."""
    runs = {}

    def get(policy):
        if policy not in runs:
            path = tmp_path_factory.mktemp("p4") / f"{policy}.csv"
            monitor = run_p4_quadratic(policy, steps=STEPS, backend="reference", csv=path)
            runs[policy] = (monitor, load_run(path), path)
        return runs[policy]

    return get


def test_p4_constant_lr_fires_after_the_descent(p4):
    monitor, run, _ = p4("constant")
    fired = monitor.fired_steps
    theta = run["param_norm"]  # d = 1 and theta > 0: the param norm is theta
    descent_end = int(run["step"][np.argmax(np.abs(theta - 1.0) < 0.2)])
    patience = monitor.rule.patience
    assert fired, "the monitor never flagged P4's noise floor at a constant lr"
    assert all(s % W == 0 for s in fired)
    # never before the loss has come down, never before the earliest step the rule allows;
    # seeds 0-5 measured: first firing at 2500, 2500, 2500, 2500, 3000, 4000
    assert fired[0] >= max(descent_end, (patience + 1) * W)
    assert fired[0] <= (patience + 3) * W
    # at an unchanged lr it keeps firing, at most once every `patience` windows
    assert len(fired) >= 2 and all(b - a >= patience * W for a, b in zip(fired, fired[1:]))
    # it fired at the noise floor: E[loss] = 1 + E(theta - 1)^2 ~ 1
    at = [run["loss_window_mean"][run["step"] == s][0] for s in fired]
    assert all(0.8 < v < 1.25 for v in at)


@pytest.mark.parametrize("policy", ["cosine", "inverse_sqrt"])
def test_p4_decaying_lr_never_fires(p4, policy):
    monitor, run, _ = p4(policy)
    assert monitor.fired_steps == []
    assert run["lr"][-1] < 0.2 * run["lr"][0]


def test_p4_update_ratio_alone_sees_a_fast_decay():
    """With the constant-lr gate off, an lr halving every two windows still never fires:
    the update ratio keeps shrinking by more than its noise."""
    monitor = run_p4_quadratic(lambda o: ExponentialLR(o, 0.5 ** (1 / (2 * W))), steps=STEPS,
                               backend="reference", lr_rtol=math.inf)
    assert monitor.fired_steps == []


def test_p4_callback_decays_the_lr_and_theta_settles(p4):
    monitor, run, _ = p4("monitor_decay")
    fired = monitor.fired_steps
    assert len(fired) >= 2
    lr = run["lr"]
    for s in fired:  # the callback ran at the poll that ended the window: the next step
        i = int(np.flatnonzero(run["step"] == s)[0])
        assert lr[i + 1] == lr[i] / 2  # halves the fp32 lr tensor (exact)
    assert lr[-1] == lr[0] / 2 ** len(fired)
    assert np.unique(lr).size == len(fired) + 1  # nothing else changed the lr
    # P4: at a constant lr theta keeps its spread; a decayed lr shrinks it
    tail = lambda r: r["param_norm"][r["step"] > STEPS - 1000]  # noqa: E731
    assert np.std(tail(run)) < 0.5 * np.std(tail(p4("constant")[1]))


# ---------------------------------------------------------------------- checkpoints
def _p4_run(steps, *, resume=None, save_at=None, csv_path=None):
    """P4's quadratic (constant lr, Adam, reference backend) under a monitor with a small
    window. ``save_at=k`` also returns the (optimizer, monitor) state after step k, through
    torch.save; ``resume=(k, state)`` starts from such a state at step k + 1."""
    gen = torch.Generator().manual_seed(3)
    samples = torch.randn(steps, generator=gen) + 1.0
    theta = torch.nn.Parameter(torch.full((1,), 3.0))
    opt = fusedopt.Adam([theta], lr=torch.tensor(1e-2), capturable=True, telemetry=True,
                        backend="reference")
    monitor = ConvergenceMonitor(opt, csv=csv_path, window=100, batches=5, poll_every=0)
    start, saved = 0, None
    if resume is not None:
        start, blob = resume
        state = torch.load(io.BytesIO(blob), weights_only=True)
        with torch.no_grad():
            theta.copy_(state["theta"])  # the model's weights: not in the optimizer's state
        opt.load_state_dict(state["optimizer"])
        monitor.load_state_dict(state["monitor"])
    with torch.no_grad():
        for t in range(start + 1, steps + 1):
            diff = theta - samples[t - 1]
            theta.grad = 2.0 * diff
            opt.step()
            monitor.step((diff * diff).sum())
            if t == save_at:
                buf = io.BytesIO()
                torch.save({"theta": theta.detach().clone(), "optimizer": opt.state_dict(),
                            "monitor": monitor.state_dict()}, buf)
                saved = buf.getvalue()
    monitor.close()
    return monitor, theta.detach().clone(), saved


def test_monitor_checkpoint_resumes_the_uninterrupted_run(tmp_path):
    """Saved mid-window and mid-sub-batch, after a firing: the resumed run fires at the same
    steps, logs the same rows and ends at the same theta, bit for bit."""
    whole, theta, _ = _p4_run(2000, csv_path=tmp_path / "whole.csv")
    k = 1234
    assert whole.fired_steps and whole.fired_steps[0] < k < whole.fired_steps[-1], \
        "the split must fall between two firings to test both halves"
    _, _, saved = _p4_run(2000, save_at=k, csv_path=tmp_path / "first.csv")
    resumed, theta_resumed, _ = _p4_run(2000, resume=(k, saved),
                                        csv_path=tmp_path / "resumed.csv")
    assert resumed.fired_steps == whole.fired_steps
    assert resumed.events == whole.events
    assert torch.equal(theta_resumed, theta)
    whole_run, resumed_run = load_run(tmp_path / "whole.csv"), load_run(tmp_path / "resumed.csv")
    after = whole_run["step"] > k
    assert list(resumed_run["step"]) == list(whole_run["step"][after])
    for col in COLUMNS:
        np.testing.assert_array_equal(resumed_run[col], whole_run[col][after], err_msg=col)
    # state_dict() polled: the first run's log was complete up to the checkpoint
    assert load_run(tmp_path / "first.csv")["step"][:k].tolist() == list(range(1, k + 1))


def test_monitor_load_state_dict_rejects_what_does_not_fit():
    _, _, saved = _p4_run(300, save_at=250)
    state = torch.load(io.BytesIO(saved), weights_only=True)["monitor"]

    def fresh(**kw):
        _, opt, _ = _linear_problem(1e-2)
        return ConvergenceMonitor(opt, poll_every=0, **{"window": 100, "batches": 5, **kw})

    before = fresh()._detector.state_dict()
    for monitor, bad, match in [
            (fresh(window=200, batches=5), state, "rule"),
            (fresh(), {**state, "steps": 7}, "equal"),
            (fresh(), {**state, "detector": {**state["detector"],
                                             "means": torch.zeros(2, 3, dtype=torch.float64)}},
             "means"),
            (fresh(), {**state, "events": [{"step": 1}]}, "events")]:
        with pytest.raises(ValueError, match=match):
            monitor.load_state_dict(bad)
        assert monitor.steps == 0 and monitor.events == []
        after = monitor._detector.state_dict()
        assert after["steps"] == before["steps"]
        for key in before:
            if key != "steps":
                assert torch.equal(after[key].nan_to_num(-7), before[key].nan_to_num(-7)), key
    _, opt, loss_fn = _linear_problem(1e-2)
    stepped = ConvergenceMonitor(opt, window=100, batches=5, poll_every=0)
    loss = loss_fn()
    loss.backward()
    opt.step()
    stepped.step(loss)
    with pytest.raises(ValueError, match="before its first step"):
        stepped.load_state_dict(state)
    assert stepped.steps == 1


# ---------------------------------------------------------------------- no host sync
def _linear_problem(lr, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = fusedopt.AdamW(model.parameters(), lr=lr, telemetry=True, backend="reference", **kw)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    return model, opt, lambda: ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("lr", [1e-2, "tensor"])
def test_no_host_sync_in_the_step_path(lr):
    lr = torch.tensor(1e-2) if lr == "tensor" else lr
    model, opt, loss_fn = _linear_problem(lr, capturable=True, max_grad_norm=0.5)
    monitor = ConvergenceMonitor(opt, window=20, batches=4, poll_every=0)
    with HostSyncCounter(allow=REFERENCE_HOST_READS) as counter:
        for _ in range(70):  # 3 window ends, with their per-window statistics, included
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            monitor.step(loss)
    assert counter.calls == []
    with HostSyncCounter() as control:  # the instrument sees the one read of a poll
        monitor.poll()
    assert control.calls == ["cpu", "tolist"]


def test_host_reads_only_at_poll_steps():
    _, opt, loss_fn = _linear_problem(1e-2)
    monitor = ConvergenceMonitor(opt, window=20, batches=4, poll_every=25)
    reads = []
    for t in range(1, 61):
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad()
        with HostSyncCounter() as counter:
            monitor.step(loss)
        if counter.calls:
            reads.append(t)
    assert reads == [25, 50]


@pytest.mark.gpu
def test_no_sync_on_cuda():
    """On a GPU the driver itself checks: any sync inside monitor.step raises."""
    p = torch.nn.Parameter(torch.randn(1000, device="cuda"))
    opt = fusedopt.AdamW([p], lr=torch.tensor(1e-2, device="cuda"), capturable=True,
                         telemetry=True, max_grad_norm=1.0)
    monitor = ConvergenceMonitor(opt, window=20, batches=4, poll_every=0)
    for _ in range(45):
        p.grad = torch.randn_like(p)
        loss = (p.detach() ** 2).sum()
        opt.step()
        torch.cuda.set_sync_debug_mode("error")
        try:
            monitor.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    monitor.poll()
    assert monitor.steps == 45


# ---------------------------------------------------------------------- logs
def test_csv_holds_every_step_of_last_stats(tmp_path):
    path = tmp_path / "run.csv"
    model, opt, loss_fn = _linear_problem(torch.tensor(1e-2), capturable=True, max_grad_norm=0.3)
    scaler = fusedopt.amp.LossScaler(init_scale=2.0 ** 10)
    expected = []
    with ConvergenceMonitor(opt, csv=path, window=10, batches=2, poll_every=7) as monitor:
        for t in range(1, 31):
            loss = loss_fn()
            scaler.scale(loss).backward()
            loss = loss.detach()
            if t == 12:  # an overflow: the step is skipped on the device
                model.weight.grad[0, 0] = math.inf
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            monitor.step(loss)
            st = opt.last_stats
            expected.append([t, float(opt.param_groups[0]["lr"]), float(loss)]
                            + [float(st[k]) for k in ("grad_norm", "clip_coef", "update_norm",
                                                      "param_norm")]
                            + [float(st["update_norm"]) / max(float(st["param_norm"]), TINY),
                               float(st["found_inf"])])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 31
    got = np.array([[float(c) for c in r[:9]] for r in rows[1:]])
    np.testing.assert_array_equal(got, np.array(expected))  # fp32 values, exact in fp64
    assert got[11, 8] == 1.0 and got[:, 8].sum() == 1.0  # the skipped step is logged
    assert (got[:, 4] < 1.0).any()                         # and clipping happened
    window_cells = [r[9:] for r in rows[1:]]
    assert all(all(c != "" for c in cells) == (i % 10 == 9)
               for i, cells in enumerate(window_cells))


def test_log_every_keeps_window_ends(tmp_path):
    path = tmp_path / "run.csv"
    _, opt, loss_fn = _linear_problem(1e-2)
    monitor = ConvergenceMonitor(opt, csv=path, window=20, batches=4, log_every=7, poll_every=0)
    for _ in range(45):  # more rows than the first buffer holds: it grows on the device
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad()
        monitor.step(loss)
    monitor.close()
    assert list(load_run(path)["step"]) == [7, 14, 20, 21, 28, 35, 40, 42]


def test_callback_fires_at_poll_time_only():
    seen = []
    _, opt, _ = _linear_problem(1e-2)
    monitor = ConvergenceMonitor(opt, window=20, batches=4, poll_every=0, on_plateau=seen.append)
    for _ in range(80):  # no gradient signal at all: the flattest possible run
        for q in opt.param_groups[0]["params"]:
            q.grad = torch.zeros_like(q)
        opt.step()
        monitor.step(torch.tensor(1.0))
    assert seen == []
    events = monitor.poll()
    assert [e.step for e in events] == [80] and seen == events
    assert events[0].lr == 1e-2 and events[0].loss_window_mean == 1.0
    assert monitor.fired_steps == [80]


class _FakeWriter:
    def __init__(self):
        self.scalars, self.flushed, self.closed = [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed = True


def test_tensorboard_sink_writes_every_logged_value():
    writer = _FakeWriter()
    _, opt, loss_fn = _linear_problem(1e-2)
    with ConvergenceMonitor(opt, tensorboard=writer, window=10, batches=2) as monitor:
        for _ in range(20):
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            monitor.step(loss)
    assert writer.closed and writer.flushed >= 2
    tags = {t for t, _, _ in writer.scalars}
    assert tags == {f"monitor/{c}" for c in COLUMNS[1:]}
    per_step = [s for t, _, s in writer.scalars if t == "monitor/loss"]
    assert per_step == list(range(1, 21))
    assert [s for t, _, s in writer.scalars if t == "monitor/plateau"] == [10, 20]


def test_tensorboard_directory(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, opt, loss_fn = _linear_problem(1e-2)
    losses = []
    with ConvergenceMonitor(opt, tensorboard=tmp_path / "tb", window=10, batches=2) as monitor:
        for _ in range(12):
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad()
            monitor.step(loss)
            losses.append(float(loss.detach()))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {f"monitor/{c}" for c in COLUMNS[1:]}
    logged = events.Scalars("monitor/loss")
    assert [e.step for e in logged] == list(range(1, 13))
    assert [e.value for e in logged] == pytest.approx(losses, rel=2 ** -23)  # stored as fp32


def test_monitor_validation():
    _, opt, _ = _linear_problem(1e-2)
    with pytest.raises(ValueError, match="telemetry=True"):
        ConvergenceMonitor(fusedopt.Adam([torch.nn.Parameter(torch.ones(2))],
                                         backend="reference"))
    with pytest.raises(ValueError, match="one element"):
        ConvergenceMonitor(opt).step(torch.ones(2))
    for bad in (dict(poll_every=-1), dict(log_every=0), dict(window=10, batches=3)):
        with pytest.raises(ValueError):
            ConvergenceMonitor(opt, **bad)


# ---------------------------------------------------------------------- the plot
def test_plot_command_writes_a_png(p4, tmp_path):
    import matplotlib.image

    out = tmp_path / "p4.png"
    paths = [str(p4(policy)[2]) for policy in ("constant", "monitor_decay")]
    proc = subprocess.run([sys.executable, "-m", "fusedopt.monitor", "plot", *paths,
                           "--labels", "constant", "monitor_decay", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 800 and image.shape[1] > 800


def test_plot_rejects_other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a ConvergenceMonitor CSV"):
        monitor_main(["plot", str(path), "-o", str(tmp_path / "x.png")])
