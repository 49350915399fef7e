"""The ``convprop`` command: it parses options, calls the library and prints.

Each subcommand group lives in its own module here with a ``register(subparsers)``
function; a user mistake (``ConvpropError``) becomes one line ``error: ...`` on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from convprop.errors import ConvpropError

COMMAND_MODULES = ("train", "data", "model", "sweep", "plot", "explore")

DESCRIPTION = """\
Train the paper's convolutional network on handwritten digits (MNIST) with
back-propagation written out by hand, and run its activation-function studies.

Start here:
  convprop train                           train the paper's network on the bundled sample
  convprop train --data mnist --epochs 1 --out runs/mnist
                                           ... on full MNIST (after `convprop data fetch`)
  convprop evaluate runs/train/model.npz   test error and confusion matrix
  convprop sweep --activation tanh-linear:0,0.13,0.2 --lr 0.1 --iterations 300 --out runs/k
                                           error curves of several k: runs/k/sweep.png
  convprop reproduce --seeds 5             the paper's Figures 6, 7, 9 and report.md
  convprop plot activations                Figures 4, 5, 8: each activation and f'
  convprop explore                         draw a digit, watch δ flow back in the browser
  convprop train --data DIR --spec 6c5-2s-12c5-2s-100f
                                           your own data (IDX, CIFAR-10, image folder, .npz)
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from convprop import __version__

    parser = _Parser(prog="convprop", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"convprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"convprop.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None and argv != [] else 0
    try:
        return int(args.func(args) or 0)
    except ConvpropError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
