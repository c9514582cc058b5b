"""Step 6 of bench/gpu/validate.sh: one summary line per step, from what the steps left.

Reads the step records validate.sh keeps (``--state``: ``steps`` with ``num|name|status|exit|
seconds|box`` per step, ``facts`` with ``key=value`` lines) and the files of ``--out``:
``junit-gpu.xml`` (step 3), ``sanitizer.log`` (step 4), ``bench_gpu.json`` (step 5) and
``validate.log`` (the GPU-test count of a dry run). Prints the lines and writes them to
``summary.txt`` in ``--out``. The summary never changes the verdict: validate.sh's exit status
comes from the steps' own exit statuses.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_steps(state: Path) -> list[dict]:
    rows = []
    path = state / "steps"
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split("|")
            if len(parts) == 6:
                num, name, status, rc, secs, box = parts
                rows.append(dict(num=num, name=name, status=status, rc=int(rc),
                                 seconds=int(secs), box=int(box)))
    return rows


def read_facts(state: Path) -> dict[str, str]:
    facts = {}
    path = state / "facts"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip()
    return facts


def junit_counts(path: Path) -> dict | None:
    """tests / failures / errors / skipped / passed summed over the test suites, and the ids
    of the tests that failed or errored (first 10)."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"parse_error": str(exc)}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    bad = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            bad.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["failed_ids"] = bad[:10]
    return counts


_SECTION = re.compile(r"^### compute-sanitizer --tool (\w+), backend (\w+)")
_END = re.compile(r"^### end (\w+) (\w+): exit (\d+)")
_ERRORS = re.compile(r"ERROR SUMMARY: (\d+) error")
_HAZARDS = re.compile(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warn")
_DRIVER = re.compile(r"sanitize_run: (\d+) of (\d+) configurations ok \(backend (\w+)")


def sanitizer_results(path: Path) -> tuple[list[str], list[str]]:
    """(one phrase per compute-sanitizer run, one per driver run without a sanitizer)."""
    if not path.exists():
        return [], []
    runs: list[str] = []
    drivers: list[str] = []
    current: dict | None = None
    for line in path.read_text(errors="replace").splitlines():
        m = _SECTION.search(line)
        if m:
            current = {"tool": m.group(1), "backend": m.group(2), "errors": None, "hazards": None,
                       "driver": None}
            continue
        m = _DRIVER.search(line)
        if m:
            phrase = f"{m.group(1)} of {m.group(2)} configurations ok"
            if current is None:
                drivers.append(f"driver on backend {m.group(3)}: {phrase}")
            else:
                current["driver"] = phrase
            continue
        if current is None:
            continue
        m = _ERRORS.search(line)
        if m:
            current["errors"] = int(m.group(1))
        m = _HAZARDS.search(line)
        if m:
            current["hazards"] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        m = _END.search(line)
        if m:
            what = []
            if current["errors"] is not None:
                what.append(f"{current['errors']} errors")
            if current["hazards"] is not None:
                h = current["hazards"]
                what.append(f"{h[0]} hazards ({h[1]} errors, {h[2]} warnings)")
            if not what:
                what.append("no sanitizer summary")
            rc = int(m.group(3))
            verdict = "ok" if rc == 0 else ("TIMEOUT" if rc in (124, 137) else f"exit {rc}")
            runs.append(f"{current['tool']} {current['backend']}: {', '.join(what)}, "
                        f"{current['driver'] or 'driver did not finish'} [{verdict}]")
            current = None
    return runs, drivers


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _x(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _gbps(x) -> str:
    """GB/s with 3 significant digits below 10 (tiny dry-run sizes), whole numbers above."""
    return "- GB/s" if x is None else (f"{x:.0f} GB/s" if x >= 10 else f"{x:.3g} GB/s")


def bench_lines(path: Path) -> tuple[str, list[str], list[str]]:
    """(headline, one line per case, one line per goal)."""
    if not path.exists():
        return "no bench_gpu.json", [], []
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return f"bench_gpu.json unreadable: {exc}", [], []
    cases, goals = result.get("cases", []), result.get("goals", [])
    met = sum(1 for g in goals if g["met"] is True)
    unmeasured = sum(1 for g in goals if g["met"] is None)
    head = (f"{len(cases)} cases" + (f", not run: {', '.join(result['not_run'])}"
                                     if result.get("not_run") else "")
            + f"; goals met {met} of {len(goals)}"
            + (f" ({unmeasured} not measured)" if unmeasured else ""))
    lines = []
    for case in cases:
        rows = case["contenders"]
        parts = [f"copy {_gbps(case.get('copy_gbps'))}"]
        for name, r in rows.items():
            if r["kind"] != "fusedopt":
                continue
            if r.get("error"):
                parts.append(f"{name} FAILED ({r['error']})")
                continue
            bits = [_gbps(r.get("gbps")),
                    f"{_pct(r.get('pct_of_copy'))} of copy",
                    f"{_x(r.get('vs_torch.fused'))} torch.fused"]
            if r.get("eager_over_graph") is not None:
                bits.append(f"eager/graph {_x(r['eager_over_graph'])}")
            if r.get("host_median_ms") is not None:
                bits.append(f"host {r['host_median_ms']:.3f} ms")
            parts.append(f"{name} " + ", ".join(bits))
        lines.append(f"{case['workload']} {case['mode']}: " + " | ".join(parts))
    glines = []
    for g in goals:
        verdict = {True: "MET   ", False: "MISSED", None: "NOT MEASURED"}[g["met"]]
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        glines.append(f"GOAL {verdict} {g['goal']}: {g['contender']} on {g['case']} = {value}")
    return head, lines, glines


def collected_count(log: Path) -> str | None:
    if not log.exists():
        return None
    m = None
    for m in re.finditer(r"(\d+)(?:/(\d+))? tests? collected", log.read_text(errors="replace")):
        pass
    return m.group(1) if m else None


def summarize(out: Path, state: Path, dry_run: bool) -> list[str]:
    steps = read_steps(state)
    facts = read_facts(state)
    title = ("dry run on the CPU: GPU steps skipped, not a validation" if dry_run
             else f"on {facts.get('gpu', '?')}")
    lines = [f"==== SUMMARY bench/gpu/validate.sh ({title})"]
    for s in steps:
        head = f"[{s['num']} {s['name']}] {s['status']} in {s['seconds']} s (box {s['box']} s)"
        detail = ""
        if s["name"] == "env":
            detail = (f"GPU {facts.get('gpu', '?')}; torch {facts.get('torch', '?')}; triton "
                      f"{facts.get('triton', '?')}; nvcc {facts.get('nvcc', '?')}; "
                      f"compute-sanitizer {facts.get('compute-sanitizer', '?')}; pybind11 "
                      f"{facts.get('pybind11', '?')}; {facts.get('cores', '?')} cores; sources "
                      f"sha256 {facts.get('sources_sha256', '?')}")
        elif s["name"] == "build":
            detail = ("SKIP build (dry run)" if dry_run else
                      f"pip install -e . took {facts.get('build_seconds', '?')} s (sm_90)")
        elif s["name"] == "tests":
            junit = junit_counts(out / "junit-gpu.xml")
            if dry_run or junit is None:
                n = collected_count(out / "validate.log")
                detail = (f"SKIP tests: no CUDA device; {n or '?'} GPU tests collected"
                          if dry_run else "no junit-gpu.xml")
            elif "parse_error" in junit:
                detail = f"junit-gpu.xml unreadable: {junit['parse_error']}"
            else:
                detail = (f"{junit['passed']} passed, {junit['failures']} failed, "
                          f"{junit['errors']} errors, {junit['skipped']} skipped of "
                          f"{junit['tests']}")
                if junit["failed_ids"]:
                    detail += "; failing: " + ", ".join(junit["failed_ids"])
        elif s["name"] == "sanitizer":
            runs, drivers = sanitizer_results(out / "sanitizer.log")
            if runs:
                detail = "; ".join(runs + [f"warm-up {d}" for d in drivers])
            elif drivers:
                detail = "SKIP compute-sanitizer (no CUDA device); " + "; ".join(drivers)
            else:
                detail = "no sanitizer runs"
        elif s["name"] == "bench":
            head_b, case_lines, _ = bench_lines(out / "bench_gpu.json")
            detail = head_b + ("; dry run: cpu backend, tiny sizes, not a claim"
                               if dry_run else "")
            lines.append(f"{head}: {detail}")
            lines += [f"    {c}" for c in case_lines]
            continue
        elif s["name"] == "summary":
            detail = "this summary"
        lines.append(f"{head}: {detail}" if detail else head)
    if not any(s["name"] == "summary" for s in steps):
        lines.append("[6 summary] this summary (summary.txt)")
    _, _, goal_lines = bench_lines(out / "bench_gpu.json")
    lines += goal_lines
    bad = [s for s in steps if s["status"] in ("FAILED", "TIMEOUT")]
    lines.append("==== VERDICT: " + ("all steps ok" if not bad else
                                     "failed: " + ", ".join(f"{s['num']} {s['name']} "
                                                            f"({s['status']})" for s in bad)))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    lines = summarize(args.out, args.state, args.dry_run)
    text = "\n".join(lines) + "\n"
    (args.out / "summary.txt").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
