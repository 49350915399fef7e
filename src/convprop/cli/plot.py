"""``convprop plot``: figures.  Each subcommand is a ``register(plot_subparsers)``
function in :data:`SUBCOMMANDS`; append yours to add ``convprop plot <name>``."""

from __future__ import annotations

import argparse
from pathlib import Path

from convprop.cli.diagnostics import register_plot_diagnostics
from convprop.cli.model import register_plot_features


def register_activations(sub) -> None:
    p = sub.add_parser(
        "activations", help="each activation and its derivative (Figures 4, 5, 8)",
        description="Draw f and f' side by side. Without --activation, draw the paper's "
                    "Figures 4 (tanh), 5 (tanh + k·x, several k) and 8 (ReLU, leaky ReLU).")
    p.add_argument("--activation", action="append", metavar="LIST",
                   help="activations on one figure, e.g. tanh-linear:0,0.13,0.5 (repeatable)")
    p.add_argument("--range", type=float, default=4.0, dest="x_range",
                   help="x from -RANGE to RANGE (default 4)")
    p.add_argument("--out", metavar="DIR", default="runs/figures",
                   help="output folder (default runs/figures)")
    p.set_defaults(func=cmd_activations)


SUBCOMMANDS = (register_activations, register_plot_features, register_plot_diagnostics)


def register(sub) -> None:
    from convprop.cli import _Parser

    p = sub.add_parser("plot", help="draw figures (activations, ...)",
                       description="Draw figures as PNG files.")
    plot_sub = p.add_subparsers(dest="plot_command", metavar="FIGURE", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(plot_sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_activations(args: argparse.Namespace) -> int:
    from convprop.errors import ConvpropError
    from convprop.experiments.runs import parse_activations
    from convprop.fileio import ensure_dir
    from convprop.plots import figures as plots

    if not (0 < args.x_range < 1e6):
        raise ConvpropError(f"--range must be positive, got {args.x_range}")
    out = ensure_dir(args.out)
    if args.activation:
        figures = {"activations": ("", parse_activations(args.activation))}
    else:
        figures = plots.PAPER_ACTIVATION_FIGURES
    for stem, (title, names) in figures.items():
        print(plots.activation_figure(names, Path(out) / f"{stem}.png", title, args.x_range))
    return 0
