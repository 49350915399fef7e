"""``convprop sweep``, ``convprop reproduce`` and ``convprop report``."""

from __future__ import annotations

import argparse

from convprop.cli.common import info, non_negative_int, positive_int
from convprop.cli.options import add_sweep_options, add_threads_option, sweep_texts, threads_for


def register(sub) -> None:
    s = sub.add_parser(
        "sweep", help="train a grid of runs (in parallel) and summarise them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every combination of the given values (comma lists) and write "
                    "runs/<name>/ per run, summary.csv, a figure of the rL curves and "
                    "report.md into --out. Runs already complete there are skipped.",
        epilog="example:\n  convprop sweep --activation tanh-linear:0,0.05,0.1,0.13,0.15,0.2 "
               "--lr 0.1 --iterations 600 --seeds 0-4 --out runs/k")
    add_sweep_options(s)
    s.add_argument("--force", action="store_true",
                   help="allow a grid of more than 1000 runs")
    s.add_argument("--out", metavar="DIR", default="runs/sweep",
                   help="output folder (default runs/sweep)")
    add_executor_options(s, per_worker_threads=True)
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser(
        "reproduce", help="run the paper's three sweeps and write report.md",
        description="Run the paper's Figures 6, 7 and 9 over several seeds (600 iterations, "
                    "batch 50, full MNIST), then write the figures and report.md: each claim "
                    "beside what was measured, with a verdict. Complete runs in --out are "
                    "reused.")
    r.add_argument("--seeds", type=positive_int, default=5, help="seeds per setting (default 5)")
    r.add_argument("--out", metavar="DIR", default="runs/reproduce",
                   help="output folder (default runs/reproduce)")
    r.add_argument("--data", metavar="mnist|DIR|sample", default="mnist",
                   help="default: full MNIST from the cache (`convprop data fetch`); 'sample' "
                        "runs on the bundled sample, which is not the paper's setting")
    r.add_argument("--iterations", type=positive_int, default=600,
                   help="iterations per run (default 600, the paper's)")
    r.add_argument("--spec", default=None,
                   help="architecture (default the paper's 6c5-2s-12c5-2s; smaller ones for "
                        "quick checks)")
    r.add_argument("--modern", action="store_true",
                   help="also train the modern baselines (cross-entropy, momentum, Adam, He "
                        "init, all together): one table row each, test error after "
                        "--iterations and after one epoch")
    r.add_argument("--diagnostics", type=non_negative_int, default=25, metavar="N",
                   help="seed 0 of every sweep setting records gradient-flow diagnostics "
                        "every N iterations for the report's figures (default 25; 0 = off; "
                        "the runs' numbers do not change)")
    add_executor_options(r, per_worker_threads=True)
    r.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "report", help="redraw figures and report.md from stored results",
        description="Redraw the figures and report.md of a run, sweep or reproduce folder "
                    "from its stored files, without training.")
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    p.set_defaults(func=cmd_report)


def add_executor_options(p: argparse.ArgumentParser, per_worker_threads: bool = False) -> None:
    p.add_argument("--executor", choices=("process", "serial", "ray"), default="process",
                   help="process: local worker processes (default); serial: one after "
                        "another in this process; ray: tasks on a Ray cluster")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="Ray cluster address (with --executor ray; default: start a local Ray)")
    add_threads_option(p, per_worker=per_worker_threads)


def cmd_sweep(args: argparse.Namespace) -> int:
    from convprop.experiments.report import sweep_record, sweep_section
    from convprop.experiments.runs import MAX_RUNS, parse_grid
    from convprop.experiments.sections import write_report
    from convprop.experiments.sweep import run_sweep
    from convprop.fileio import ensure_dir, write_json

    grid = parse_grid(**sweep_texts(args))
    runs = grid.runs(limit=None if args.force else MAX_RUNS)
    if "sample" in grid.data and args.data is None:
        info("data: the bundled MNIST sample (full MNIST is not cached; `convprop data fetch`)")
    out = ensure_dir(args.out)
    threads = threads_for(args, per_worker=True)
    rows = run_sweep(runs, out, args.executor, args.workers, args.address, log=info,
                     threads=threads)
    write_json(out / "sweep.json", sweep_record(grid, runs))
    path = write_report(out, [sweep_section(runs)], title=f"Sweep {out.name}")
    bad = sum(r["status"] != "completed" for r in rows.values())
    print(f"{len(rows)} runs ({bad} stalled or diverged); summary: {out / 'summary.csv'}; "
          f"figure: {out / 'sweep.png'}; report: {path}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from convprop.experiments.paper import ReproduceOptions
    from convprop.experiments.reproduce import reproduce
    from convprop.experiments.runs import parse_data

    data = parse_data(args.data)[0]
    if data == "sample":
        info("WARNING: --data sample is the bundled 10k/2k subset, NOT the paper's setting "
             "(full MNIST); the report says so and its numbers are not comparable")
    o = ReproduceOptions(seeds=args.seeds, data=data, iterations=args.iterations,
                         modern=args.modern, diagnostics=args.diagnostics)
    if args.spec is not None:
        from convprop.maths.network import parse_spec

        parse_spec(args.spec)
        o.spec = args.spec
    if data != "sample":
        from convprop.data import default_spec_for, load_data

        dataset = load_data(data)  # a one-line error now, not in every worker, if it is bad
        if args.spec is None and data != "mnist":
            o.spec = default_spec_for(dataset.input_shape)
            info(f"spec: {o.spec} (fits {dataset.description}; --spec to choose another)")
    path = reproduce(o, args.out, args.executor, args.workers, args.address, log=info,
                     threads=threads_for(args, per_worker=True))
    print(f"report: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from convprop.experiments.report import report

    print(f"report: {report(args.path)}")
    return 0
