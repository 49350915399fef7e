"""``convprop sweep``, ``convprop reproduce`` and ``convprop report``."""

from __future__ import annotations

import argparse

from convprop.cli.common import info, positive_int
from convprop.errors import ConvpropError


def register(sub) -> None:
    s = sub.add_parser(
        "sweep", help="train a grid of runs (in parallel) and summarise them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every combination of the given values (comma lists) and write "
                    "runs/<name>/ per run, summary.csv, a figure of the rL curves and "
                    "report.md into --out. Runs already complete there are skipped.",
        epilog="example:\n  convprop sweep --activation tanh-linear:0,0.05,0.1,0.13,0.15,0.2 "
               "--lr 0.1 --iterations 600 --seeds 0-4 --out runs/k")
    s.add_argument("--activation", action="append", metavar="LIST",
                   help="activations, e.g. tanh-linear:0,0.13 or sigmoid,relu (repeatable; "
                        "default sigmoid)")
    s.add_argument("--lr", metavar="LIST", help="learning rates, e.g. 0.1,1.5,2 (default 1)")
    s.add_argument("--batch-size", metavar="LIST", help="batch sizes (default 50)")
    s.add_argument("--spec", metavar="LIST", help="architectures (default 6c5-2s-12c5-2s)")
    length = s.add_mutually_exclusive_group()
    length.add_argument("--iterations", metavar="LIST", help="mini-batches per run")
    length.add_argument("--epochs", metavar="LIST", help="epochs per run (default 1)")
    s.add_argument("--seeds", metavar="LIST", default="0",
                   help="seeds: 0-4, 0,2,5 or 0-2,7 (default 0)")
    s.add_argument("--dtype", metavar="LIST", help="float32 and/or float64 (default float32)")
    s.add_argument("--data", metavar="LIST",
                   help="sample, mnist or directories (default: full MNIST if cached, else "
                        "the sample)")
    s.add_argument("--loss", metavar="LIST", help="losses (default mse)")
    s.add_argument("--optimizer", metavar="LIST", help="optimisers (default sgd)")
    s.add_argument("--init", metavar="LIST", help="initialisations (default dlt)")
    s.add_argument("--force", action="store_true",
                   help="allow a grid of more than 1000 runs")
    s.add_argument("--out", metavar="DIR", default="runs/sweep",
                   help="output folder (default runs/sweep)")
    add_executor_options(s)
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
    add_executor_options(r)
    before = {a.dest for a in r._actions}
    for add in REPRODUCE_FLAGS:
        add(r)
    r.set_defaults(func=cmd_reproduce,
                   extra_dests=[a.dest for a in r._actions if a.dest not in before])

    p = sub.add_parser(
        "report", help="redraw figures and report.md from stored results",
        description="Redraw the figures and report.md of a run, sweep or reproduce folder "
                    "from its stored files, without training.")
    p.add_argument("path", metavar="RUN_OR_SWEEP_DIR")
    p.set_defaults(func=cmd_report)


#: Functions ``add(reproduce_parser)`` that add flags to ``convprop reproduce``; each
#: flag's value lands in ``ReproduceOptions.extra[dest]`` (e.g. ``--modern`` ->
#: ``extra["modern"]``) for the section factories in ``experiments.REPRODUCE_SECTIONS``.
def _beyond_flags(r: argparse.ArgumentParser) -> None:
    """The sections of ``convprop.experiments.reproduce_beyond``."""
    r.add_argument("--modern", action="store_true",
                   help="also train the modern baselines (cross-entropy, momentum, Adam, He "
                        "init, all together): one table row each, test error after "
                        "--iterations and after one epoch")
    r.add_argument("--diagnostics", type=int, default=25, metavar="N",
                   help="seed 0 of every sweep setting records gradient-flow diagnostics "
                        "every N iterations for the report's figures (default 25; 0 = off; "
                        "the runs' numbers do not change)")


REPRODUCE_FLAGS: list = [_beyond_flags]


def add_executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("process", "serial", "ray"), default="process",
                   help="process: local worker processes (default); serial: one after "
                        "another in this process; ray: tasks on a Ray cluster")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="Ray cluster address (with --executor ray; default: start a local Ray)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from convprop.experiments import core as ex
    from convprop.fileio import ensure_dir, write_json

    grid = ex.parse_grid(activation=args.activation, lr=args.lr, batch_size=args.batch_size,
                         spec=args.spec, iterations=args.iterations, epochs=args.epochs,
                         dtype=args.dtype, data=args.data, seeds=args.seeds, loss=args.loss,
                         optimizer=args.optimizer, init=args.init)
    runs = grid.runs(limit=None if args.force else ex.MAX_RUNS)
    if "sample" in grid.data and args.data is None:
        info("data: the bundled MNIST sample (full MNIST is not cached; `convprop data fetch`)")
    out = ensure_dir(args.out)
    write_json(out / "sweep.json", ex.sweep_record(grid, runs))
    rows = ex.run_sweep(runs, out, args.executor, args.workers, args.address, log=info)
    path = ex.write_report(out, [ex.sweep_section(runs)], title=f"Sweep {out.name}")
    bad = sum(r["status"] != "completed" for r in rows.values())
    print(f"{len(rows)} runs ({bad} stalled or diverged); summary: {out / 'summary.csv'}; "
          f"figure: {out / 'sweep.png'}; report: {path}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from convprop.experiments import core as ex

    if getattr(args, "diagnostics", 0) < 0:
        raise ConvpropError(f"--diagnostics: {args.diagnostics} must be >= 0 (0 = off)")
    data = ex.parse_data(args.data)[0]
    if data == "sample":
        info("WARNING: --data sample is the bundled 10k/2k subset, NOT the paper's setting "
             "(full MNIST); the report says so and its numbers are not comparable")
    o = ex.ReproduceOptions(seeds=args.seeds, data=data, iterations=args.iterations,
                            extra={d: getattr(args, d) for d in args.extra_dests})
    if args.spec is not None:
        from convprop.maths.network import parse_spec

        parse_spec(args.spec)
        o.spec = args.spec
    if data == "mnist":
        from convprop.data.mnist import load_data

        load_data("mnist")  # a one-line error now, not in every worker, if it is absent
    path = ex.reproduce(o, args.out, args.executor, args.workers, args.address, log=info)
    print(f"report: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from convprop.experiments import core as ex

    print(f"report: {ex.report(args.path)}")
    return 0
