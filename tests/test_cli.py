"""The command lines: ``python -m fusedopt`` (menu), ``fusedopt.env``, ``fusedopt.demo`` and
``fusedopt.monitor plot`` usage errors, and where ``fusedopt.bench`` writes (never over an
earlier run) and when its header warns about the load."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusedopt.bench import cli as bench_cli

TINY = ["--max-params", "3000", "--repeats", "1", "--warmup", "1", "--min-sample-ms", "1",
        "--peers", "torch.foreach", "--modes", "plain", "--no-plot"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


def test_menu_lists_every_entry_point():
    proc = _run("fusedopt")
    assert proc.returncode == 0, proc.stderr
    for name in ("env", "bench", "demo", "monitor", "papers"):
        assert f"\n  {name} " in proc.stdout
    bad = _run("fusedopt", "nonsense")
    assert bad.returncode == 2 and "unknown entry point 'nonsense'" in bad.stderr


def test_menu_runs_an_entry_point():
    proc = _run("fusedopt", "env", "--help")
    assert proc.returncode == 0 and "usage: python -m fusedopt.env" in proc.stdout


def test_env_help_and_bad_arguments():
    proc = _run("fusedopt.env", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m fusedopt.env")
    bad = _run("fusedopt.env", "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_env_report_has_the_build_section():
    proc = _run("fusedopt.env")
    assert proc.returncode == 0, proc.stderr
    assert "build (setup.py):" in proc.stdout


def test_demo_usage_line():
    proc = _run("fusedopt.demo", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m fusedopt.demo")
    assert "--steps" in proc.stdout and "--backend" in proc.stdout


def test_monitor_plot_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    proc = _run("fusedopt.monitor", "plot", str(missing), "-o", str(tmp_path / "x.png"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"python -m fusedopt.monitor plot: no such file: {missing}"


# ------------------------------------------------------------------------- bench output place
def test_bench_default_output_is_a_fresh_dated_folder(tmp_path):
    """A default run writes a dated folder, never the committed layout
    (bench/results/<machine>/short.*); test_bench_output_dir_never_reuses_a_folder checks that
    a second run gets another folder."""
    (tmp_path / "bench" / "results").mkdir(parents=True)
    proc = _run("fusedopt.bench", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (machine,) = (tmp_path / "bench" / "results").iterdir()
    assert not (machine / "short.csv").exists()
    (run,) = machine.iterdir()
    assert (run / "short.csv").is_file() and (run / "short.md").is_file()
    assert run.name[:4].isdigit() and run.name.endswith("Z")
    assert f"writing to {run.relative_to(tmp_path)}" in proc.stdout


def test_bench_out_never_replaces_files_without_overwrite(tmp_path):
    committed = tmp_path / "short.csv"
    committed.write_text("committed results\n")
    proc = _run("fusedopt.bench", *TINY, "--out", str(tmp_path))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert committed.read_text() == "committed results\n"
    proc = _run("fusedopt.bench", *TINY, "--out", str(tmp_path), "--overwrite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert committed.read_text() != "committed results\n"


@pytest.mark.parametrize("load1, ncores, threads, warns", [
    (0.2, 2, 2, False), (0.6, 2, 2, True), (1.4, 4, 2, False), (2.6, 4, 2, True),
    (3.0, 2, 1, True), (0.4, 1, 4, False)])
def test_bench_load_warning(load1, ncores, threads, warns):
    text = bench_cli.load_warning(load1, ncores, threads)
    assert (text is not None) == warns
    if warns:
        assert f"load average {load1:.2f}" in text


def test_bench_output_dir_never_reuses_a_folder(tmp_path, monkeypatch):
    import argparse
    import datetime

    monkeypatch.chdir(tmp_path)
    now = datetime.datetime(2026, 12, 7, 18, 0, 0)
    args = argparse.Namespace(out=None)
    first = bench_cli.output_dir(args, "cpu-x-2c", now)
    assert first == Path("bench/results/cpu-x-2c/2026-12-07T180000Z")
    first.mkdir(parents=True)
    assert bench_cli.output_dir(args, "cpu-x-2c", now) == first.with_name(first.name + "-2")
