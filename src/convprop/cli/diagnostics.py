"""``convprop plot diagnostics RUN... [-o out.png]``: gradient-flow figures.

The ``plot`` command group lives in ``cli/plot.py``; its ``SUBCOMMANDS`` tuple lists
:func:`register_plot_diagnostics`.
"""

from __future__ import annotations

import argparse


def register_plot_diagnostics(plot_sub) -> None:
    p = plot_sub.add_parser(
        "diagnostics", help="per-layer gradient flow of runs trained with --diagnostics",
        description="Draw mean |delta|, mean |weight gradient|, saturated and dead unit "
                    "fractions per layer over iterations, one column per run, from each "
                    "RUN/diagnostics.csv (written by `convprop train --diagnostics N`).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("-o", "--output", "--out", dest="output", metavar="PNG",
                   default="diagnostics.png",
                   help="output figure file (default diagnostics.png; --out: the old spelling)")
    p.add_argument("--metrics", metavar="M1,M2", default=None,
                   help="rows to draw, e.g. delta,dead (default: every metric recorded)")
    p.add_argument("--labels", metavar="L1,L2", default=None,
                   help="column titles, one per run (default: folder, activation, lr)")
    p.set_defaults(func=cmd_plot_diagnostics)


def cmd_plot_diagnostics(args: argparse.Namespace) -> int:
    from convprop.errors import ConvpropError
    from convprop.plots.diagnostics import plot_diagnostics

    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise ConvpropError(f"--labels gives {len(labels)} names for {len(args.runs)} runs")
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    out = plot_diagnostics(args.runs, args.output, metrics=metrics, labels=labels)
    print(f"figure written to {out}")
    return 0
