"""The command line of ``python -m fusedopt.bench``.

Default: the short run (GPT-2 small AdamW: plain, clip+AMP, bf16) against every installed
peer, a few minutes on 2 CPU cores; ``--full`` runs everything (see :mod:`fusedopt.bench.suite`).
It prints a table per case as the run goes, then writes ``<name>.csv``, ``<name>.md``,
``<name>.json`` (metadata) and ``<name>.png`` into a fresh dated folder,
``bench/results/<machine>/<UTC date and time>/``, or into ``--out DIR``, where it never
replaces an existing file unless ``--overwrite`` is given (so the committed results under
bench/results/ are only ever rewritten on purpose). ``--bytes`` prints the bytes model,
``--list`` the plan.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

from .. import backends, registry
from . import bytes_model, metadata, modes, plot, report, roofline, suite, workloads
from .contenders import FUSEDOPT, fusedopt_contenders
from .peers import PEERS, peer_contenders

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The header warns when the 1-minute load average exceeds the cores the run leaves free plus
#: this much. Above it, other processes want the cores the step's threads run on for more than
#: half the time on average: a contender's samples are stretched whenever it is descheduled
#: (and an OpenMP step waits at every barrier for its slowest thread), unevenly between the
#: interleaved rounds, so the ratios can be off by more than their p20-p80 spread.
LOAD_SLACK = 0.5


def _int(text: str) -> int:
    """'20000', '1M', '4M', '1.5G' -> int."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper())
    return int(float(text[:-1]) * mult) if mult else int(text)


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fusedopt.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="run every workload, algorithm and mode")
    p.add_argument("--workloads", type=_list, help=f"comma list of {workloads.names()} and "
                   f"'{suite.SWEEP}' (replaces the plan)")
    p.add_argument("--algorithms", type=_list, help="comma list of registry algorithms")
    p.add_argument("--modes", type=_list, help=f"comma list of {list(modes.MODES)}")
    p.add_argument("--backends", type=_list, help="fusedopt backends (default: every native "
                   "backend of the device; the reference backend when there is none)")
    p.add_argument("--peers", type=_list, help=f"comma list of {list(PEERS)}, or 'none' "
                   "(default: every installed one)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls per contender (2)")
    p.add_argument("--min-sample-ms", type=float, default=10.0,
                   help="shortest sample; short steps are repeated within one (10 ms)")
    p.add_argument("--max-params", type=_int, help="scale every workload down to at most this "
                   "many params (e.g. 20000 for a smoke test)")
    p.add_argument("--sweep-sizes", type=lambda t: tuple(_int(x) for x in _list(t)),
                   default=workloads.SWEEP_SIZES, help="sweep sizes, e.g. 1M,4M,16M")
    p.add_argument("--mem-fraction", type=float, default=0.5,
                   help="share of the free memory a case may use (0.5)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--out", type=Path, help="output folder (default: a fresh one, "
                   "bench/results/<machine>/<UTC date and time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace files of an earlier run (e.g. committed results)")
    p.add_argument("--name", help="file name stem (default: short or full)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print the plan and exit")
    p.add_argument("--bytes", action="store_true", help="print the bytes model and exit")
    p.add_argument("--host", action="store_true", help="the host-overhead mode instead: "
                   "every other flag is python -m fusedopt.bench.host's (see its --help)")
    p.add_argument("--no-host", action="store_true", help="leave out the short host-overhead "
                   "table that follows the main tables (HOST_ARGS)")
    return p


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_warning(load1: float, ncores: int, threads: int) -> str | None:
    """A warning when the load average makes this run's ratios unreliable (LOAD_SLACK)."""
    limit = max(ncores - threads, 0) + LOAD_SLACK
    if load1 <= limit:
        return None
    return (f"warning: load average {load1:.2f} > {limit:.2f} ({ncores} cores, {threads} "
            "threads): other processes compete for this run's cores, so its ratios may be off "
            "by more than the p20-p80 spread; re-run on an idle machine")


def output_dir(args: argparse.Namespace, machine: str, now: datetime.datetime) -> Path:
    """``--out``, or a fresh dated folder under bench/results/<machine>/ (never an old one)."""
    if args.out is not None:
        return args.out
    base = Path("bench") / "results" / machine / now.strftime("%Y-%m-%dT%H%M%SZ")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _outputs(out: Path, name: str) -> list[Path]:
    """Files a run named ``name`` may write into ``out``."""
    return [out / f"{name}.{ext}" for ext in ("csv", "md", "json", "png")] + \
        [out / f"{name}-sweep.png"]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_names(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    known = {"backends": backends.BACKENDS, "peers": tuple(PEERS) + ("none",),
             "algorithms": tuple(registry.ALGORITHMS), "modes": tuple(modes.MODES),
             "workloads": tuple(workloads.names()) + (suite.SWEEP,)}
    for key, allowed in known.items():
        bad = [x for x in getattr(args, key) or [] if x not in allowed]
        if bad:
            p.error(f"--{key}: unknown {bad}; choose from {list(allowed)}")
    if args.repeats < 1 or args.warmup < 1:
        p.error("--repeats and --warmup must be >= 1")


def _plan(args: argparse.Namespace, settings: suite.Settings, optimizers: int
          ) -> list[suite.CaseSpec]:
    per_param = suite.bytes_per_param_needed("adamw", modes.get("plain"), optimizers)
    fit = suite.budget_bytes(settings) // per_param
    if args.workloads or args.algorithms or args.modes:
        return suite.plan(args.workloads or ["gpt2-small"], args.algorithms or ["adamw"],
                          args.modes or list(suite.SHORT_MODES), max_params=args.max_params,
                          sweep_sizes=args.sweep_sizes, fit_params=fit)
    if args.full:
        return suite.full_plan(max_params=args.max_params, sweep_sizes=args.sweep_sizes,
                               fit_params=fit)
    return suite.short_plan(max_params=args.max_params)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1 when a fusedopt contender failed)."""
    given = sys.argv[1:] if argv is None else list(argv)
    if "--host" in given:  # its own flags: tiny tensors, host time only
        from . import host
        return host.main([a for a in given if a != "--host"])
    p = parser()
    args = p.parse_args(argv)
    _check_names(args, p)
    if args.bytes:
        print(bytes_model.markdown_table(list(registry.ALGORITHMS), list(modes.MODES.values())))
        return EXIT_OK
    device = _device(args.device)
    settings = suite.Settings(device, repeats=args.repeats, warmup=args.warmup,
                              min_sample_s=args.min_sample_ms / 1e3,
                              mem_fraction=args.mem_fraction, seed=args.seed)
    fused, notes = fusedopt_contenders(device, args.backends)
    peers, peer_notes = peer_contenders(device, None if args.peers is None else
                                        [x for x in args.peers if x != "none"])
    contenders = fused + peers + roofline.CONTENDERS
    notes += peer_notes
    specs = _plan(args, settings, len(fused) + len(peers))
    if args.list:
        for s in specs:
            names = [c.name for c in contenders if s.selects(c)]
            print(f"{s.workload.describe()} · {s.algorithm} · {s.mode.name}: {', '.join(names)}")
        return EXIT_OK

    meta = metadata.collect(device)
    out = output_dir(args, meta["machine"], datetime.datetime.now(datetime.timezone.utc))
    name = args.name or ("full" if args.full else "short")
    existing = [str(f) for f in _outputs(out, name) if f.exists()]
    if existing and not args.overwrite:
        print(f"python -m fusedopt.bench: {', '.join(existing)} exist(s): pick another --out "
              "or --name, or pass --overwrite", file=sys.stderr)
        return EXIT_USAGE
    meta.update(argv=sys.argv[1:] if argv is None else argv, repeats=args.repeats,
                warmup=args.warmup, min_sample_ms=args.min_sample_ms, notes=notes,
                load_warning=load_warning(meta["load_avg_start"], cores(), meta["threads"]))
    print(f"fusedopt.bench on {meta['machine']} ({meta['gpu'] or meta['cpu']}, "
          f"{meta['threads']} threads, torch {meta['versions']['torch']}, load "
          f"{meta['load_avg_start']:.2f}): {len(specs)} cases, {args.repeats} interleaved "
          f"rounds after {args.warmup} warm-up calls; writing to {out}")
    if meta["load_warning"]:
        print(f"  {meta['load_warning']}")
    for n in notes:
        print(f"  note: {n}")
    t0 = time.perf_counter()
    rows, skipped = [], []
    progress = report.Progress(len(specs))
    for spec, case_rows, case_skipped in suite.run(specs, contenders, settings, progress):
        rows += case_rows
        skipped += case_skipped
        if case_rows:
            print("\n" + report.case_header(case_rows, spec.mode.doc))
            print(report.text_table(case_rows))
        for line in report.skipped_lines(case_skipped):
            print(line)
        sys.stdout.flush()
    meta.update(load_avg_end=metadata.load_average(), seconds=round(time.perf_counter() - t0, 1),
                skipped=[vars(s) for s in skipped])
    if rows:
        print("\nWhat each contender runs:")
        print("\n".join(report.legend(rows)))
    _write(args, out, name, meta, rows, skipped)
    if not args.no_host:
        _host_section(args, out / f"{name}-host")
    failed = [s for s in skipped if s.contender.startswith(FUSEDOPT + ".")]
    if failed or not rows:
        print(f"\nFAILED: {len(failed)} fusedopt contender(s) failed"
              + ("" if rows else "; no result row"), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


#: The main job's host-overhead table: GPT-2 small's 148 shapes at ~20K params, the scenarios
#: of a training step (fresh grads; kept grads; clip + AMP + telemetry), 5 rounds of 20 steps.
HOST_ARGS = ["--many", "0", "--steps", "20", "--repeats", "5", "--scenarios",
             "reassigned,kept,clip+amp+telemetry"]


def _host_section(args: argparse.Namespace, out: Path) -> None:
    """The host time of one step next to torch's (fusedopt.bench.host), written to ``out``."""
    from . import host
    print("\nHost overhead of one optimizer step (tiny tensors, one thread; `python -m "
          "fusedopt.bench --host` runs every workload and scenario):", flush=True)
    if args.overwrite:
        for f in host.outputs(out):
            f.unlink()
    threads = torch.get_num_threads()
    try:
        host.main([*HOST_ARGS, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)


def _write(args: argparse.Namespace, out: Path, name: str, meta: dict, rows: list,
           skipped: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report.write_csv(out / f"{name}.csv", rows, meta)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    title = (f"{meta['machine']} · {meta['gpu'] or meta['cpu']} · {meta['threads']} threads · "
             f"torch {meta['versions']['torch']} · {meta['date'][:10]}")
    md = [f"# fusedopt.bench `{name}` on {meta['machine']}", "", title, "",
          f"load average {meta['load_avg_start']:.2f} at start, {meta['load_avg_end']:.2f} at "
          f"end; {meta['repeats']} interleaved rounds; command "
          f"`{' '.join(['python -m fusedopt.bench'] + list(meta['argv']))}`", "",
          *([f"**{meta['load_warning']}**", ""] if meta["load_warning"] else []),
          report.markdown(rows), "", "What each contender runs:", ""]
    md += ["- " + line.strip() for line in report.legend(rows)]
    if skipped:
        md += ["", "Skipped:", ""] + [f"- {s.case}: {s.contender}: {s.reason}" for s in skipped]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    written = [out / f"{name}.{ext}" for ext in ("csv", "md", "json")]
    if rows and not args.no_plot:
        try:
            written += plot.write_pngs(out, name, rows, title)
        except ImportError:
            print("  note: matplotlib is not installed: no PNG (pip install matplotlib)")
    print("\nwrote " + ", ".join(str(w) for w in written))
